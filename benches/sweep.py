#!/usr/bin/env python3
"""aemos under a sweep of loads, plotted: where it stands at a glance (issue 15).

Runs `aemos-loadgen` against a fresh `aemos serve` per point and draws three PNGs into OUT
(default benches/plots):

  throughput_vs_connections.png  one reading per request (`http --batch 1`) at 1, 10, 50 and
                                 200 connections, CHAINS (100) chains reading the sensors;
                                 accepted readings/s and request p50/p99
  throughput_vs_chains.png       batches of 1,000 at 8 connections with 0, 100, 1,000 and
                                 10,000 chains; accepted readings/s and server CPU per reading
  latency_vs_load.png            reading-to-notification p50/p90/p99 over MQTT, CoAP Observe
                                 and Socket.IO (`notify`) at 1k, 10k, 50k and 100k readings/s

Every run's JSON report is kept in OUT/runs/, and a Markdown table of the figures is printed
(for BENCHMARKS.md). Plotting needs matplotlib: when it is missing, a venv beside this file
(benches/.venv) gets it from PyPI.

Usage: python3 benches/sweep.py [RELEASE_DIR] [--seconds 10] [--out benches/plots]
  RELEASE_DIR holds `aemos` and `aemos-loadgen` (cargo build --release -p aemos-api -p
  aemos-benches); default $CARGO_TARGET_DIR/release, else target/release. Run from anywhere;
  `notify` needs node and api/tests/clients/node_modules (npm ci --prefix api/tests/clients).
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTTP_PORT, MQTT_PORT, COAP_PORT = 3997, 18930, 18931
URL = f"http://127.0.0.1:{HTTP_PORT}"


def server(release, data_dir):
    p = subprocess.Popen(
        [str(release / "aemos"), "serve", "--data-dir", str(data_dir),
         "--http-addr", f"127.0.0.1:{HTTP_PORT}", "--mqtt-addr", f"127.0.0.1:{MQTT_PORT}",
         "--mqtt5-addr", "off", "--coap-addr", f"127.0.0.1:{COAP_PORT}", "--pg-addr", "off",
         "--flight-addr", "off"],
        env={**os.environ, "RUST_LOG": "warn"}, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{URL}/api/v1/health/readiness", timeout=1)
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("aemos did not become ready")


def register_chains(n, sensors, variable="temperature"):
    """n chains `{variable} > 25` on sensor-{i % sensors}, over 8 keep-alive connections."""
    failed = []

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", HTTP_PORT)
        for i in range(k, n, 8):
            s = f"sensor-{i % sensors:05d}"
            chain = {"id": f"sweep-{i}", "nodes": [
                {"type": "filter", "sensor": s, "condition": f"{variable} > 25"},
                {"type": "action", "action": "notify", "device": s}]}
            c.request("POST", "/api/v1/rulechains", json.dumps(chain),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                failed.append(r.status)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    if failed:
        sys.exit(f"{len(failed)} chain registrations failed: {failed[:5]}")


def point(release, runs, name, chains, chain_sensors, loadgen_args):
    """One fresh server, its chains, one loadgen run; the JSON report."""
    with tempfile.TemporaryDirectory() as data:
        p = server(release, data)
        try:
            register_chains(chains, chain_sensors)
            out = runs / f"{name}.json"
            subprocess.run([str(release / "aemos-loadgen"), "--json", str(out), *loadgen_args,
                            "--server-pid", str(p.pid)], check=True, cwd=ROOT)
            return json.loads(out.read_text())
        finally:
            p.terminate()
            p.wait()


def plotting():
    try:
        import matplotlib
    except ImportError:
        venv = ROOT / "benches" / ".venv"
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "matplotlib"], check=True)
        sys.path.insert(0, next((venv / "lib").glob("python3*/site-packages")).as_posix())
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def main():
    ap = argparse.ArgumentParser()
    default = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    ap.add_argument("release", nargs="?", type=Path, default=default)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "plots")
    ap.add_argument("--chains", type=int, default=100)
    a = ap.parse_args()
    runs = a.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    secs = str(a.seconds)

    connections = [1, 10, 50, 200]
    single = [point(a.release, runs, f"single-c{c}", a.chains, 100,
                    ["http", "--url", URL, "--batch", "1", "--connections", str(c),
                     "--sensors", "100", "--variables", "1", "--seconds", secs])
              for c in connections]
    chain_counts = [0, 100, 1000, 10000]
    batches = [point(a.release, runs, f"batch-chains{n}", n, 10000,
                     ["http", "--url", URL, "--batch", "1000", "--connections", "8",
                      "--seconds", secs])
               for n in chain_counts]
    rates = [1000, 10000, 50000, 100000]
    notify = [point(a.release, runs, f"notify-r{r}", 0, 1,
                    ["notify", "--url", URL, "--mqtt", f"127.0.0.1:{MQTT_PORT}",
                     "--coap", f"127.0.0.1:{COAP_PORT}", "--rate", str(r), "--flips", "200",
                     "--seconds", secs])
              for r in rates]

    f = lambda r, k: r["figures"].get(k, float("nan"))
    lat = lambda r, ch, q: r["latency_ms"].get(ch, {}).get(q, float("nan"))
    print("| connections | readings/s | request p50 / p99 ms | server CPU µs/reading |")
    print("|---|---|---|---|")
    for c, r in zip(connections, single):
        print(f"| {c} | {f(r, 'readings_per_sec'):,.0f} | {lat(r, 'request', 'p50'):.2f} / "
              f"{lat(r, 'request', 'p99'):.2f} | {f(r, 'server_cpu_us_per_reading'):.1f} |")
    print("\n| chains | readings/s (batches of 1,000) | server CPU µs/reading |")
    print("|---|---|---|")
    for n, r in zip(chain_counts, batches):
        print(f"| {n:,} | {f(r, 'readings_per_sec'):,.0f} | "
              f"{f(r, 'server_cpu_us_per_reading'):.2f} |")
    print("\n| readings/s | MQTT p50 / p99 ms | CoAP p50 / p99 | Socket.IO p50 / p99 |")
    print("|---|---|---|---|")
    for rate, r in zip(rates, notify):
        cells = " | ".join(f"{lat(r, ch, 'p50'):.1f} / {lat(r, ch, 'p99'):.1f}"
                           for ch in ["mqtt", "coap", "socketio"])
        print(f"| {rate:,} | {cells} |")

    plt = plotting()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(connections, [f(r, "readings_per_sec") for r in single], "o-",
            label="accepted readings/s")
    ax.set_xscale("log")
    ax.set_xlabel("connections (one reading per request)")
    ax.set_ylabel("readings/s")
    ax2 = ax.twinx()
    for q, style in [("p50", "s--"), ("p99", "^--")]:
        ax2.plot(connections, [lat(r, "request", q) for r in single], style, color="gray",
                 label=f"request {q}")
    ax2.set_ylabel("request latency (ms)")
    fig.legend(loc="upper left")
    ax.set_title(f"aemos: single readings over HTTP, {a.chains} chains")
    fig.tight_layout()
    fig.savefig(a.out / "throughput_vs_connections.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [max(n, 1) for n in chain_counts]
    ax.plot(xs, [f(r, "readings_per_sec") for r in batches], "o-", label="accepted readings/s")
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(n) for n in chain_counts])
    ax.set_xlabel("chains")
    ax.set_ylabel("readings/s (batches of 1,000, 8 connections)")
    ax2 = ax.twinx()
    ax2.plot(xs, [f(r, "server_cpu_us_per_reading") for r in batches], "s--", color="gray",
             label="server CPU µs per reading")
    ax2.set_ylabel("CPU µs per reading")
    fig.legend(loc="lower left")
    ax.set_title("aemos: batch ingestion against the number of chains")
    fig.tight_layout()
    fig.savefig(a.out / "throughput_vs_chains.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    for ch, color in [("mqtt", "C0"), ("coap", "C1"), ("socketio", "C2")]:
        for q, style in [("p50", "o-"), ("p90", "s:"), ("p99", "^--")]:
            ax.plot(rates, [lat(r, ch, q) for r in notify], style, color=color,
                    label=f"{ch} {q}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("readings/s (100 devices, 200 threshold crossings/s)")
    ax.set_ylabel("reading to notification (ms)")
    ax.legend(ncol=3, fontsize="small")
    ax.set_title("aemos: notification latency against load")
    fig.tight_layout()
    fig.savefig(a.out / "latency_vs_load.png", dpi=110)
    print(f"\nplots in {a.out}")


if __name__ == "__main__":
    main()
