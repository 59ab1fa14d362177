#!/usr/bin/python3
# Follow batchflow runs without polling: print every batchflow_progress
# notification as it arrives (see docs/monitoring.md).
#
#   python3 examples/listen_progress.py "host=/var/run/postgresql dbname=postgres"
#
# Needs psycopg2 (Debian 12: apt-get install python3-psycopg2; elsewhere:
# pip install psycopg2-binary).  Nothing else in batchflow needs it, so
# scripts/deps.sh does not install it.
import json
import select
import sys

try:
    import psycopg2
except ImportError:
    sys.exit("listen_progress.py needs psycopg2: apt-get install python3-psycopg2 "
             "(Debian), or pip install psycopg2-binary")

conn = psycopg2.connect(sys.argv[1] if len(sys.argv) > 1 else "dbname=postgres")
conn.autocommit = True
conn.cursor().execute("LISTEN batchflow_progress")
while True:
    if select.select([conn], [], [], 60) == ([], [], []):
        continue                                  # no news for a minute
    conn.poll()
    for n in conn.notifies:
        p = json.loads(n.payload)
        what = f"run {p['run']}" + (f" loop {p['loop']}" if p["loop"] else "")
        print(f"{what}: {p['status']} {p['completed'] + p['failed']}/{p['total']}"
              f" ({p['failed']} failed)", flush=True)
    conn.notifies.clear()
