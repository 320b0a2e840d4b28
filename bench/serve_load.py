"""`llkd-edge serve` under load on the loopback address, next to the runtime called directly, on the same texts.

    python -m bench.serve_load runs/demo/model            # after `make demo`; ~2 min on 2 cores

A bounded load test: for each number of concurrent clients, a fixed number of requests (each with
--texts-per-request texts of BBC News' test split) is sent over keep-alive connections, then it stops.
Every answer is checked against the runtime's own labels and probabilities for the same texts; any non-200
answer or a wrong or missing one is counted (and fails the run). The runtime row is one caller, one request
at a time, in this process: what an app that embeds the model pays. Client threads share the 2 cores with
the service, so the service's figures are a floor. Results: bench/results/serve_load.{json,md}.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from llkd_edge.data import load_builtin
from llkd_edge.runtime import Classifier


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row(name: str, seconds: list[float], wall: float, texts: int, requests: int) -> dict:
    ms = np.array(seconds) * 1e3
    return {"name": name, "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "requests": requests,
            "requests_per_s": round(requests / wall, 1), "texts_per_s": round(texts / wall, 1)}


def direct(clf: Classifier, batches: list[list[str]]) -> dict:
    seconds = []
    started = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        clf.predict_proba(batch)
        seconds.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    return _row("runtime, called directly (1 caller)", seconds, wall, sum(map(len, batches)), len(batches))


def load(port: int, batches: list[list[str]], expected: list[np.ndarray], labels, clients: int) -> dict:
    local = threading.local()
    failures: list[str] = []

    def ask(i: int) -> float:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = json.dumps({"texts": batches[i]})
        t = time.perf_counter()
        local.conn.request("POST", "/predict", body, {"content-type": "application/json"})
        response = local.conn.getresponse()
        payload = response.read()
        seconds = time.perf_counter() - t
        if response.status != 200:
            failures.append(f"request {i}: HTTP {response.status}")
            return seconds
        answer = json.loads(payload)
        got = np.array([[p[name] for name in labels] for p in answer["probabilities"]])
        if got.shape != expected[i].shape or np.abs(got - expected[i]).max() > 1e-5 \
                or answer["labels"] != [labels[j] for j in expected[i].argmax(1)]:
            failures.append(f"request {i}: answer differs from the runtime's")
        return seconds

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = list(pool.map(ask, range(len(batches))))
    wall = time.perf_counter() - started
    row = _row(f"llkd-edge serve, {clients} concurrent client{'s' * (clients > 1)}", seconds, wall,
               sum(map(len, batches)), len(batches))
    row.update(clients=clients, failures=len(failures), failure_examples=failures[:5])
    return row


def run(model_dir: str, clients: list[int], requests: int, per_request: int, threads: int, variant: str) -> dict:
    texts = load_builtin("bbc-news:test").texts
    batches = [[texts[(i * per_request + j) % len(texts)] for j in range(per_request)] for i in range(requests)]
    clf = Classifier.load(model_dir, variant=variant, threads=threads)
    clf.predict_proba(batches[0])  # warm-up
    expected = [clf.predict_proba(b) for b in batches]
    rows = [direct(clf, batches)]

    port = _free_port()
    cli = [sys.executable, "-m", "llkd_edge.cli", "serve", model_dir, "--port", str(port), "--threads", str(threads), "--variant", variant]
    service = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        service.stdout.readline()
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        load(port, batches[:20], expected[:20], clf.labels, 1)  # warm-up
        for n in clients:
            rows.append(load(port, batches, expected, clf.labels, n))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())
    finally:
        service.terminate()
        service.wait(timeout=30)
    return {"model": str(Path(model_dir).resolve()), "variant": clf.variant, "requests": requests,
            "texts_per_request": per_request, "rows": rows,
            "batching": {"requests": health["requests"], "model_calls": health["model_calls"]},
            "ratios": {r["name"]: round(r["texts_per_s"] / rows[0]["texts_per_s"], 2) for r in rows[1:]}}


def markdown(report: dict) -> str:
    table = markdown_table(["", "p50 ms", "p99 ms", "requests/s", "texts/s", "vs runtime", "failed"],
                           [[r["name"], f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['requests_per_s']:.1f}",
                             f"{r['texts_per_s']:.1f}", f"{report['ratios'].get(r['name'], 1.0):.2f}x",
                             str(r.get("failures", "-"))] for r in report["rows"]])
    b = report["batching"]
    return (f"{report['requests']} requests of {report['texts_per_request']} text(s) per row, model variant "
            f"{report['variant']}; the service answered {b['requests']} requests with {b['model_calls']} model calls.\n\n"
            + table)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("model_dir", nargs="?", default="runs/demo/model")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--variant", default="fp32",
                        help="fp32 (default) answers exactly alike in any batch; dynamic int8 scales each batch's "
                             "activations together, so its answers move by ~1e-3 with the texts batched beside them")
    parser.add_argument("--out", default=str(RESULTS / "serve_load.json"))
    args = parser.parse_args()
    report = run(args.model_dir, args.clients, args.requests, args.texts_per_request, args.threads, args.variant)
    report.update(record(args.threads, "fastapi", "uvicorn", "onnxruntime"))
    write_report(Path(args.out), report, markdown(report))
    print(markdown(report))
    if any(r.get("failures") for r in report["rows"]):
        raise SystemExit("some answers failed or differed from the runtime's")


if __name__ == "__main__":
    main()
