"""The reference SQL queries over the same Parquet files, by aemos and by DuckDB, in one run.

    python benches/py/sql_vs_duckdb.py --sqlbench target/release/aemos-sqlbench \
        --data-dir /tmp/aemos-sqlbench --readings 100000000

Runs `aemos-sqlbench` (which generates the readings the first time, then times each query
`--runs` times through aemos's query engine), then the same queries in DuckDB over exactly the
files of the newest catalog version, and prints best and median of both and the ratio
aemos/DuckDB per query. Both use every core of the machine.
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import time

import duckdb

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, as aemos-sqlbench
DAY_END_MS = START_MS + 86_400_000
SENSOR = "sensor-00042"


def duckdb_queries(files):
    src = "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    ts = lambda ms: f"make_timestamptz({ms * 1000}::BIGINT)"
    return {
        "count": f"SELECT count(*) FROM {src}",
        "one_sensor_day_minmaxavg": (
            f"SELECT variable, min(value), max(value), avg(value) FROM {src} "
            f"WHERE sensor = '{SENSOR}' AND time >= {ts(START_MS)} AND time < {ts(DAY_END_MS)} "
            "GROUP BY variable"
        ),
        "one_sensor_day_1min_avg": (
            f"SELECT time_bucket(INTERVAL '1 minute', time) AS minute, variable, avg(value) "
            f"FROM {src} WHERE sensor = '{SENSOR}' AND time >= {ts(START_MS)} "
            f"AND time < {ts(DAY_END_MS)} GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "top10_sensors_by_max": (
            f"SELECT sensor, max(value) AS m FROM {src} GROUP BY sensor "
            "ORDER BY m DESC, sensor LIMIT 10"
        ),
    }


def catalog_files(data_dir):
    objects = os.path.join(data_dir, "objects")
    catalogs = sorted(glob.glob(os.path.join(objects, "**", "catalog", "*.json"), recursive=True))
    if not catalogs:
        raise SystemExit(f"no catalog under {objects}")
    newest = catalogs[-1]
    root = os.path.dirname(os.path.dirname(newest))
    with open(newest) as f:
        state = json.load(f)
    files = [
        os.path.join(objects, f["path"]) if os.path.exists(os.path.join(objects, f["path"]))
        else os.path.join(root, os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(f["path"])))), f["path"])
        for f in state["files"].values()
        if f.get("table", "readings") == "readings"
    ]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise SystemExit(f"catalog {newest} names files that are not there: {missing[:3]}")
    return files, sum(f["rows"] for f in state["files"].values())


def run_aemos(args):
    out = subprocess.run(
        [args.sqlbench, "--data-dir", args.data_dir, "--readings", str(args.readings),
         "--runs", str(args.runs)],
        check=True, capture_output=True, text=True,
    ).stdout
    print(out.strip())
    times = {}
    for m in re.finditer(r"query=(\S+) best_s=([\d.]+) median_s=([\d.]+)", out):
        times[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return times


def run_duckdb(files, runs):
    con = duckdb.connect()
    times = {}
    for name, sql in duckdb_queries(files).items():
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            con.execute(sql).fetchall()
            samples.append(time.perf_counter() - t)
        samples.sort()
        times[name] = (samples[0], statistics.median(samples))
    return times, con


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sqlbench", default="target/release/aemos-sqlbench")
    p.add_argument("--data-dir", default="/tmp/aemos-sqlbench")
    p.add_argument("--readings", type=int, default=100_000_000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    aemos = run_aemos(args)
    files, rows = catalog_files(args.data_dir)
    duck, con = run_duckdb(files, args.runs)
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"duckdb {duckdb.__version__}, threads {threads}; {len(files)} files, {rows} rows")
    print(f"{'query':34} {'aemos best/median s':>22} {'duckdb best/median s':>22} {'ratio (best)':>12}")
    for name, (d_best, d_med) in duck.items():
        a_best, a_med = aemos[name]
        print(f"{name:34} {a_best:>10.3f} / {a_med:<9.3f} {d_best:>10.3f} / {d_med:<9.3f} {a_best / d_best:>12.2f}")
    if "top10_sensors_by_max_rows" in aemos:
        a_best, a_med = aemos["top10_sensors_by_max_rows"]
        d_best, _ = duck["top10_sensors_by_max"]
        print(f"{'top10 (aemos reading every row)':34} {a_best:>10.3f} / {a_med:<9.3f} {'':22} {a_best / d_best:>12.2f}")


if __name__ == "__main__":
    main()
