"""Query latency of `hashae serve`: p50/p99 of query-by-id over real HTTP, for 1 and 8 clients.

Starts the server (a subprocess on a free loopback port) on the given store, warms it up, then for
each mode and client count runs that many threads, each with its own keep-alive connection, firing
GET /api/query?id=...&k=... with random indexed ids until a time or request budget runs out.
Prints a table and writes JSON. Every answer must be a 200 (errors are counted and fail the run).

    python benchmarks/serve_load.py --store .hashae --json serve_load.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.serving
from tests.serving import ServeProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="Store folder to serve.")
    parser.add_argument("--clients", default="1,8", help="Comma-separated concurrent client counts (default 1,8).")
    parser.add_argument("--modes", default="hamming,latent,hybrid", help="Query modes to measure.")
    parser.add_argument("-k", type=int, default=10, help="Results per query (default 10).")
    parser.add_argument("--seconds", type=float, default=8.0, help="Time budget per scenario (default 8).")
    parser.add_argument("--requests", type=int, default=4000, help="Request budget per scenario (default 4000).")
    parser.add_argument("--warmup", type=int, default=100, help="Unmeasured requests first (default 100).")
    parser.add_argument("--start-timeout", type=float, default=600, help="Seconds to wait for the server.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here.")
    args = parser.parse_args()

    try:
        server = ServeProcess(args.store, timeout=args.start_timeout).__enter__()
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    try:
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        stats = get_json(host, port, "/api/stats")
        ids = sample_ids(host, port, total=stats["items"])
        print(f"store {args.store}: {stats['items']:,} items, {stats['bits']} bits, generation {stats['generation']}; "
              f"server started in {server.startup_s:.1f} s at {server.url}", flush=True)
        results = []
        for mode in args.modes.split(","):
            run_clients(host, port, ids, mode=mode, k=args.k, clients=1, seconds=60, budget=args.warmup)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                results.append(run_clients(host, port, ids, mode=mode, k=args.k, clients=clients, seconds=args.seconds, budget=args.requests))
                print_row(results[-1], header=len(results) == 1)
    finally:
        server.stop()
    document = {
        "store": str(args.store),
        "items": stats["items"],
        "bits": stats["bits"],
        "k": args.k,
        "server_startup_s": round(server.startup_s, 2),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    errors = sum(r["errors"] for r in results)
    if errors:
        print(f"{errors} requests failed", file=sys.stderr)
    return 1 if errors else 0


def get_json(host: str, port: int, path: str) -> dict:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def sample_ids(host: str, port: int, *, total: int, want: int = 2000) -> list[int]:
    """Up to `want` distinct indexed ids, from the server's random samples."""
    ids: set[int] = set()
    for seed in range(100):
        ids |= {item["id"] for item in get_json(host, port, f"/api/items?limit=200&seed={seed}")["items"]}
        if len(ids) >= min(want, total):
            break
    return sorted(ids)


def run_clients(host: str, port: int, ids: list[int], *, mode: str, k: int, clients: int, seconds: float, budget: int) -> dict:
    """`clients` threads with one keep-alive connection each, until `seconds` or `budget` requests."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    issued = iter(range(budget))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(slot: int) -> None:
        rng = random.Random(slot)
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if next(issued, None) is None:
                        return
                path = f"/api/query?id={rng.choice(ids)}&k={k}&mode={mode}"
                began = time.perf_counter()
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=30)
                    continue
                latencies[slot].append(time.perf_counter() - began)
                if response.status != 200:
                    errors.append(f"{response.status}: {body[:200]!r}")
        finally:
            connection.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    values = np.array([v for per in latencies for v in per]) * 1000
    row = {"mode": mode, "clients": clients, "requests": int(values.size), "errors": len(errors), "seconds": round(elapsed, 2),
           "requests_per_s": round(values.size / elapsed, 1) if elapsed else 0.0}
    for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
        row[name] = round(float(np.percentile(values, q)), 3) if values.size else None
    row["max_ms"] = round(float(values.max()), 3) if values.size else None
    row["first_errors"] = errors[:3]
    return row


def print_row(row: dict, *, header: bool) -> None:
    if header:
        print(f"{'mode':<8} {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8}")
    print(f"{row['mode']:<8} {row['clients']:>7} {row['requests']:>8} {row['errors']:>6} {row['p50_ms']:>8.2f} {row['p90_ms']:>8.2f} "
          f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f} {row['requests_per_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
