"""Reading many rows out of a running aemos through each SQL front-end, side by side.

    python benches/py/sql_clients.py --rows 10000000 \
        --http http://127.0.0.1:3000 --pg 127.0.0.1:5433 --flight grpc://127.0.0.1:8082

Each client runs the same query and ends with the whole result in its own in-memory form:
Flight SQL through ADBC into a pyarrow Table; the Postgres wire protocol through psycopg 3 in
binary format into Python tuples; HTTP `format=arrow` into a pyarrow Table (the Arrow IPC
stream read as it arrives); HTTP `format=json` parsed by Python's json module into dicts.
Prints rows/s and MB/s received per client (best of `--runs`). `--token` sends a user JWT
(production mode); in dev mode no credential is needed.
"""

import argparse
import json
import time
import urllib.parse
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import psycopg
import pyarrow as pa
import pyarrow.ipc as ipc


def query(rows):
    return f"SELECT time, device, sensor, variable, value FROM readings LIMIT {rows}"


def http_get(base, sql, fmt, token):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"sql": sql, "format": fmt})
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return urllib.request.urlopen(req, timeout=600)


def flight(args, sql):
    kwargs = {}
    if args.token:
        kwargs["db_kwargs"] = {"adbc.flight.sql.authorization_header": f"Bearer {args.token}"}
    with flightsql.connect(args.flight, **kwargs) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    return table.num_rows, table.nbytes


def postgres(args, sql):
    host, port = args.pg.rsplit(":", 1)
    conninfo = f"host={host} port={port} dbname=aemos user=aemos password={args.token or 'dev'}"
    with psycopg.connect(conninfo) as conn, conn.cursor(binary=True) as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    return len(rows), 0


def http_arrow(args, sql):
    with http_get(args.http, sql, "arrow", args.token) as resp:
        reader = ipc.open_stream(resp)
        table = reader.read_all()
    return table.num_rows, table.nbytes


def http_json(args, sql):
    with http_get(args.http, sql, "json", args.token) as resp:
        body = resp.read()
    rows = json.loads(body)
    return len(rows), len(body)


CLIENTS = {
    "flight-sql (adbc -> pyarrow)": flight,
    "postgres binary (psycopg)": postgres,
    "http arrow (pyarrow)": http_arrow,
    "http json (json.loads)": http_json,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--http", default="http://127.0.0.1:3000")
    p.add_argument("--pg", default="127.0.0.1:5433")
    p.add_argument("--flight", default="grpc://127.0.0.1:8082")
    p.add_argument("--token")
    p.add_argument("--only", help="comma-separated prefixes of the clients to run")
    args = p.parse_args()
    sql = query(args.rows)
    print(f"query: {sql}; best of {args.runs}")
    print(f"{'client':32} {'rows':>10} {'seconds':>8} {'rows/s':>12} {'MB':>8}")
    for name, run in CLIENTS.items():
        if args.only and not any(name.startswith(o) for o in args.only.split(",")):
            continue
        best = None
        for _ in range(args.runs):
            t = time.perf_counter()
            n, size = run(args, sql)
            elapsed = time.perf_counter() - t
            if n != args.rows:
                raise SystemExit(f"{name}: {n} rows, expected {args.rows}")
            best = elapsed if best is None else min(best, elapsed)
        print(f"{name:32} {n:>10} {best:>8.2f} {n / best:>12,.0f} {size / 1e6:>8.0f}")


if __name__ == "__main__":
    main()
