#!/usr/bin/env python3
"""Runs statements through psycopg 3, as an application would, and prints what came back as
JSON: used by aemos's Postgres wire-protocol tests.

psycopg binds parameters on the server: each statement with parameters goes through the
extended query protocol (Parse, Bind, Describe, Execute). The connection is not in autocommit
mode, so psycopg opens a transaction (BEGIN) before the first statement, as applications do.

usage: pg_client.py DSN < statements.json
statements: [{"sql": "...", "params": [...], "binary": false}, ...]
output: one result per statement, {"columns": [[name, type oid], ...], "rows": [...]} or
{"error": {"sqlstate": "...", "message": "..."}}
"""
import json
import sys

import psycopg


def main() -> None:
    dsn = sys.argv[1]
    statements = json.load(sys.stdin)
    results = []
    with psycopg.connect(dsn) as conn:
        for s in statements:
            try:
                with conn.cursor(binary=s.get("binary", False)) as cur:
                    cur.execute(s["sql"], s.get("params"))
                    columns = [[d.name, d.type_code] for d in cur.description or []]
                    rows = cur.fetchall() if cur.description else []
                    results.append({"columns": columns, "rows": rows})
            except psycopg.Error as e:
                conn.rollback()
                results.append({"error": {"sqlstate": e.sqlstate, "message": str(e)}})
        conn.commit()
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
