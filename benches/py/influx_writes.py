"""The Python InfluxDB 2 client writing to aemos's `/api/v2/write`, against the same line
protocol posted to `/api/v1/write`, in one run.

    python benches/py/influx_writes.py --url http://127.0.0.1:3000 --points 2000000

Three runs of the same points (10,000 sensors x 4 variables, one line per reading, stamped in
the last hour): `influxdb_client`'s `write_api()` at its defaults (batching: 1,000 lines per
request, flushed every second, on its own thread), the same client in `SYNCHRONOUS` mode with
1,000 lines per call, and urllib3 (the client's own HTTP library) posting the identical
1,000-line bodies to `/api/v1/write`. Prints points/s of each.
"""

import argparse
import time

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

BATCH = 1000


def lines(points, start_ms):
    out = []
    for i in range(points):
        s, v = (i // 4) % 10_000, i % 4
        t = start_ms + i // 40_000
        out.append(f"bench,sensor=sensor-{s:05} v{v}={(i % 977) / 10} {t}")
    return out


def batches(all_lines):
    return [all_lines[i:i + BATCH] for i in range(0, len(all_lines), BATCH)]


def client_default(args, data):
    with InfluxDBClient(url=args.url, token=args.token, org="aemos") as client:
        t = time.perf_counter()
        with client.write_api() as api:
            for b in data:
                api.write(bucket="aemos", record=b, write_precision=WritePrecision.MS)
        return time.perf_counter() - t


def client_sync(args, data):
    with InfluxDBClient(url=args.url, token=args.token, org="aemos") as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        t = time.perf_counter()
        for b in data:
            api.write(bucket="aemos", record=b, write_precision=WritePrecision.MS)
        return time.perf_counter() - t


def v1_same_bodies(args, data):
    http = urllib3.PoolManager()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    bodies = ["\n".join(b).encode() for b in data]
    t = time.perf_counter()
    for body in bodies:
        r = http.request("POST", f"{args.url}/api/v1/write?precision=ms", body=body, headers=headers)
        if r.status != 200:
            raise SystemExit(f"/api/v1/write answered {r.status}: {r.data[:200]!r}")
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:3000")
    p.add_argument("--points", type=int, default=2_000_000)
    p.add_argument("--token")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    start_ms = int(time.time() * 1000) - 3_000_000
    data = batches(lines(args.points, start_ms))
    print(f"{args.points} points in batches of {BATCH}; best of {args.runs}")
    results = {}
    for name, run in [("influxdb-client defaults -> /api/v2/write", client_default),
                      ("influxdb-client SYNCHRONOUS -> /api/v2/write", client_sync),
                      ("urllib3 same bodies -> /api/v1/write", v1_same_bodies)]:
        best = min(run(args, data) for _ in range(args.runs))
        results[name] = args.points / best
        print(f"{name:46} {best:>7.2f} s {results[name]:>12,.0f} points/s")
    # The batching writer logs failed requests instead of raising: count what was stored.
    http = urllib3.PoolManager()
    sql = f"SELECT count(*) AS n FROM readings WHERE measurement = 'bench' AND time >= to_timestamp_millis({start_ms})"
    r = http.request("POST", f"{args.url}/api/v1/query", json={"sql": sql},
                     headers={"Authorization": f"Bearer {args.token}"} if args.token else {})
    print(f"stored {r.json()[0]['n']} of {args.points * 3 * args.runs} points written")
    base = results["urllib3 same bodies -> /api/v1/write"]
    for name, rate in results.items():
        print(f"{name:46} {rate / base:>7.3f} of /api/v1/write")


if __name__ == "__main__":
    main()
