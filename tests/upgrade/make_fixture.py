#!/usr/bin/env python3
"""Makes the database of an earlier release that the upgrade test opens with this one.

    python3 tests/upgrade/make_fixture.py MAM_BINARY OUT_DIR [--database-url URL]

Drives the given `mam` (built from the release before) over real HTTP: enrols phones in two
communes, pushes births registered on time and late, children, an edit from a stale view (a
conflict), a refused value, a settle of nothing, an ODK Collect submission, and an office
account. Then writes, into OUT_DIR:

- `sqlite.db` (a `mam backup` of the SQLite database), or with `--database-url`
  `postgres.sql` (`pg_dump --inserts` of that PostgreSQL database, which must be empty);
- `records.json`: every record as a phone of both communes pulls it from cursor 0;
- `cells.txt`: `mam indicators cells`, the indicator tables.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

COMMUNES = ["19753", "19774"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(url, body, token=None, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("content-type", content_type)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.read()


def main():
    mam, out = sys.argv[1], sys.argv[2]
    db_url = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--database-url" else None
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="mam-fixture-")
    db = ["--database-url", db_url] if db_url else ["--data-dir", work]
    env = dict(os.environ, RUST_LOG="warn")
    port = free_port()
    server = subprocess.Popen([mam, "serve", "--listen", f"127.0.0.1:{port}", *db], env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)

    def cli(*args, stdin=None):
        return subprocess.run([mam, *args, *db], env=env, check=True, capture_output=True,
                              text=True, input=stdin).stdout

    def phone(name, communes):
        args = ["device", "enroll", "--name", name, "--json"]
        for c in communes:
            args += ["--commune", c]
        code = json.loads(cli(*args))["code"]
        _, body = post(base + "/v1/enroll", {"code": code})
        return json.loads(body)["token"]

    def sync(token, push, cursor=0):
        _, body = post(base + "/v1/sync", {"protocol": 1, "cursor": cursor, "push": push}, token)
        return json.loads(body)

    def fields(values):
        return {k: {"value": v} for k, v in values.items()}

    hoa = phone("Nguyễn Thị Hoa", [COMMUNES[0]])
    lan = phone("Trần Thị Lan", [COMMUNES[1]])
    push, records = [], []
    for n in range(12):
        rid = str(uuid.UUID(int=0x0193_7a4e_0000_7000_8000_000000000000 + n))
        dob = f"2020-0{1 + n % 6}-1{n % 9}"
        values = {"child_name": f"Bé {n}", "sex": "f" if n % 2 else "m",
                  "date_of_birth": dob, "village": f"Thôn {n % 4 + 1}",
                  "birth_registered": n % 3 != 0}
        if n % 3 != 0:
            values["registration_date"] = f"2020-0{1 + n % 6}-2{n % 9}" if n % 2 else "2020-09-30"
        push.append({"seq": n + 1, "record": rid, "form": "birth-registration", "version": 1,
                     "commune": COMMUNES[0], "fields": fields(values)})
        records.append(rid)
    # A refused value: kept for review.
    push.append({"seq": 13, "record": str(uuid.UUID(int=0x0193_7a4e_0000_7000_8000_0000000000ff)),
                 "form": "birth-registration", "version": 1, "commune": COMMUNES[0],
                 "fields": fields({"sex": "x", "date_of_birth": "2020-01-01", "village": "Thôn 1"})})
    done = sync(hoa, push)
    assert done["acked_through"] == 13, done
    # Children in the other commune.
    kids = []
    for n in range(3):
        rid = str(uuid.UUID(int=0x0193_7a4f_0000_7000_8000_000000000000 + n))
        kids.append({"seq": n + 1, "record": rid, "form": "child", "version": 2,
                     "commune": COMMUNES[1],
                     "fields": fields({"child_name": f"Trẻ {n}", "sex": "m",
                                       "date_of_birth": "2021-05-05", "village": "Thôn 2",
                                       "consent_guardian": True})})
    done = sync(lan, kids)
    assert done["acked_through"] == 3, done
    # Two phones of one commune edit one field from the same view: a conflict.
    second = phone("Lê Văn Nam", [COMMUNES[0]])
    seen = sync(second, [])
    rec = next(r for r in seen["records"] if r["id"] == records[0])
    dots = [s["dot"] for s in rec["fields"]["village"]]
    sync(hoa, [{"seq": 14, "record": records[0], "form": "birth-registration", "version": 1,
                "commune": COMMUNES[0],
                "fields": {"village": {"value": "Thôn 7", "supersedes": dots}}}])
    sync(second, [{"seq": 1, "record": records[0], "form": "birth-registration", "version": 1,
                   "commune": COMMUNES[0],
                   "fields": {"village": {"value": "Thôn 8", "supersedes": dots}}}])
    # An ODK Collect phone's submission.
    odk = json.loads(cli("device", "enroll", "--name", "ODK", "--commune", COMMUNES[0], "--odk",
                         "--json", "--public-url", base))
    instance = "uuid:0193aaaa-0000-7000-8000-000000000001"
    xml = (f"<data id=\"child\" version=\"2\"><mam_commune>{COMMUNES[0]}</mam_commune>"
           "<child_name>Bé ODK</child_name><sex>f</sex><date_of_birth>2022-02-02</date_of_birth>"
           "<village>Thôn 1</village><consent_guardian>true</consent_guardian>"
           f"<meta><instanceID>{instance}</instanceID></meta></data>")
    boundary = "fixture-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
            f"filename=\"s.xml\"\r\nContent-Type: text/xml\r\n\r\n{xml}\r\n--{boundary}--\r\n")
    status, _ = post(odk["server_url"] + "/submission", body.encode(),
                     content_type=f"multipart/form-data; boundary={boundary}")
    assert status == 201
    cli("user", "add", "--name", "tinh", "--role", "province", "--area", "46",
        stdin="mật khẩu đủ dài\n")

    # What a phone of both communes pulls, and the indicator tables.
    reader = phone("Đọc", COMMUNES)
    pulled, cursor = [], 0
    while True:
        page = sync(reader, [], cursor)
        pulled += page["records"]
        cursor = page["cursor"]
        if not page["more"]:
            break
    pulled.sort(key=lambda r: r["id"])
    with open(os.path.join(out, "records.json"), "w") as f:
        json.dump(pulled, f, ensure_ascii=False, indent=1, sort_keys=True)
    with open(os.path.join(out, "cells.txt"), "w") as f:
        f.write(cli("indicators", "cells"))
    if db_url:
        server.terminate()
        server.wait()
        dump = subprocess.run(["pg_dump", "--inserts", "--no-owner", "--no-privileges", db_url],
                              check=True, capture_output=True, text=True).stdout
        # Plain SQL only: psql's meta-commands (`\\restrict`) are for psql.
        dump = "".join(l for l in dump.splitlines(True) if not l.startswith("\\"))
        with open(os.path.join(out, "postgres.sql"), "w") as f:
            f.write(dump)
    else:
        cli("backup", os.path.join(work, "backup.db"))
        server.terminate()
        server.wait()
        shutil.copy(os.path.join(work, "backup.db"), os.path.join(out, "sqlite.db"))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
