#!/usr/bin/env python3
"""How much of an XLSForm corpus `mam form import` converts, against pyxform's own count.

    python3 tests/xlsform/coverage.py MAM CORPUS_DIR [--json]

For each spreadsheet: the questions pyxform (PyPI) makes of it (groups and repeats are not
questions; the generated `meta` block and the layout pyxform generates for table-list groups
are left out), the fields Mầm converts (every field,
repeat items' fields, notes and derived fields from `calculate`; the repeat itself is not
counted),
the constructs `mam form import` names as not converted, and whether it refused the file.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
from pyxform.xls2json import parse_file_to_json  # noqa: E402


def pyxform_questions(path):
    def walk(el, out):
        kids = el.get("children")
        if el.get("type") in ("group", "repeat", "survey") or (
            kids and not el.get("type", "").startswith("select")
        ):
            for c in kids or []:
                walk(c, out)
            return
        # What pyxform makes for a table-list group's layout (a note with the group's label,
        # a row of the choices' labels) is not a question anyone wrote.
        name = el.get("name") or ""
        if name.startswith(("generated_table_list_label_", "reserved_name_for_field_list_labels_")):
            return
        out.append(name)

    d = parse_file_to_json(path)
    out = []
    for c in d.get("children", []):
        if c.get("name") != "meta":
            walk(c, out)
    return out


def mam_fields(form):
    def walk(fields):
        n = 0
        for f in fields:
            if f.get("type") == "repeat":
                n += walk(f.get("fields", []))
            else:
                n += 1
        return n

    return walk(form.get("fields", [])) + len(form.get("derived", []))


def main():
    mam, corpus = sys.argv[1], sys.argv[2]
    rows = []
    for path in sorted(glob.glob(os.path.join(corpus, "*.xls*"))):
        name = os.path.basename(path)
        try:
            theirs = len(pyxform_questions(path))
        except Exception:  # pyxform refuses it too: not counted
            rows.append({"file": name, "pyxform": None})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "form.json")
            run = subprocess.run(
                [mam, "form", "import", path, "--out", out],
                capture_output=True,
                text=True,
                timeout=60,
            )
            report = run.stdout + run.stderr
            named = [l for l in report.splitlines() if l.strip().startswith("- ")]
            if run.returncode == 0 and os.path.exists(out):
                ours = mam_fields(json.load(open(out)))
                refused = None
            else:
                ours = 0
                refused = report.strip().splitlines()[-1] if report.strip() else "no output"
            crashed = run.returncode not in (0, 1)
        rows.append(
            {
                "file": name,
                "pyxform": theirs,
                "mam": ours,
                "named": len(named),
                "refused": refused,
                "crashed": crashed,
            }
        )
    counted = [r for r in rows if r["pyxform"] is not None]
    theirs = sum(r["pyxform"] for r in counted)
    ours = sum(min(r["mam"], r["pyxform"]) for r in counted)
    summary = {
        "spreadsheets": len(rows),
        "pyxform_questions": theirs,
        "converted": ours,
        "percent": round(100.0 * ours / theirs, 1) if theirs else 0.0,
        "refused": sum(1 for r in counted if r["refused"]),
        "crashed": sum(1 for r in counted if r["crashed"]),
    }
    if "--json" in sys.argv:
        print(json.dumps({"rows": rows, "summary": summary}, ensure_ascii=False))
        return
    print(f"{'spreadsheet':40} {'pyxform':>7} {'Mầm':>5} {'named':>5}  refused")
    for r in rows:
        if r["pyxform"] is None:
            print(f"{r['file']:40} {'—':>7}   (pyxform refuses it too)")
            continue
        print(
            f"{r['file']:40} {r['pyxform']:>7} {r['mam']:>5} {r['named']:>5}  {r['refused'] or ''}"
        )
    print(
        f"\n{summary['converted']} of {summary['pyxform_questions']} questions converted "
        f"({summary['percent']} %), {summary['refused']} spreadsheets refused, "
        f"{summary['crashed']} crashes"
    )


if __name__ == "__main__":
    main()
