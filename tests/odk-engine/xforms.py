#!/usr/bin/env python3
"""The XForms pyxform (PyPI) makes of XLSForm spreadsheets.

    python3 xforms.py OUT_DIR SPREADSHEET...

Writes OUT_DIR/<spreadsheet>.xml for each it converts and prints, as JSON, each
spreadsheet's XForm path or the error pyxform gave.
"""
import contextlib
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
from pyxform.xls2xform import xls2xform_convert  # noqa: E402

out_dir, paths = sys.argv[1], sys.argv[2:]
result = {}
for path in paths:
    out = os.path.join(out_dir, os.path.basename(path) + ".xml")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            xls2xform_convert(
                xlsform_path=path, xform_path=out, validate=False, pretty_print=False
            )
        result[path] = {"xform": out}
    except Exception as e:  # pyxform refuses it: nothing to compare
        result[path] = {"error": str(e)}
print(json.dumps(result))
