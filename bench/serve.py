"""`seqtool serve` under load: N concurrent clients on localhost against offline translation.

    python bench/serve.py RUN --clients 8 --requests 25 --sentences 4 --seconds 120

Starts `seqtool serve -c RUN` on a free local port (a process of its own, `--threads` torch threads),
then N clients send requests of `--sentences` source lines each (the run's test split, or --src, in
turn), each client waiting for its answer before sending the next, until every client has sent
`--requests` or `--seconds` have passed. Prints served sentences/s, request latency p50/p99 and
failed requests, beside the same sentences translated offline here (the path `seqtool translate`
takes, on as many threads): all in one call, and request by request (what serving without
micro-batching could do at best); and whether every served answer equals the offline one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import seqtool  # noqa: E402
from seqtool.data.prepare import prepared_dir  # noqa: E402


async def client(http: httpx.AsyncClient, batches: list[list[str]], deadline: float, answers: list,
                 latencies: list[float], failures: list[str], sent: list[list[str]]) -> None:
    for lines in batches:
        if time.perf_counter() > deadline:
            return
        sent.append(lines)
        start = time.perf_counter()
        try:
            response = await http.post("/translate", json={"sentences": lines})
        except httpx.HTTPError as err:
            failures.append(repr(err))
            continue
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            failures.append(f"{response.status_code} {response.text}")
            continue
        answers.extend(zip(lines, (t["text"] for t in response.json()["translations"])))


async def load_test(url: str, args, sources: list[str]) -> dict:
    per_client = [[[sources[(c * args.requests * args.sentences + r * args.sentences + i) % len(sources)]
                    for i in range(args.sentences)] for r in range(args.requests)] for c in range(args.clients)]
    answers, latencies, failures, sent = [], [], [], []
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.seconds + 60, limits=limits) as http:
        start = time.perf_counter()
        deadline = start + args.seconds
        await asyncio.gather(*(client(http, batches, deadline, answers, latencies, failures, sent)
                               for batches in per_client))
        seconds = time.perf_counter() - start
    latencies.sort()
    return {"answers": answers, "failures": failures, "sent": sent, "seconds": seconds, "requests": len(latencies),
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def start_server(run: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as err:
        server = subprocess.Popen([sys.executable, "-m", "seqtool", "serve", "-c", run, "--port", "0",
                                   "--no-access-log", "--device", "cpu"], env=env, stderr=err,
                                  stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"serving .* on (http://\S+)", log.read_text())
        if found:
            return server, found.group(1)
        if server.poll() is not None:
            raise SystemExit(f"the server ended: {log.read_text()}")
        time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client at most")
    parser.add_argument("--sentences", type=int, default=4, help="sentences per request")
    parser.add_argument("--seconds", type=float, default=120, help="no new request after this")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and of offline")
    parser.add_argument("--src", help="source file (default: the run's test split)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = seqtool.load(args.run, device="cpu")
    sources = Path(args.src or prepared_dir(model.run.recipe) / "refs" / "test.src").read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(args.run, args.threads, Path(tmp) / "serve.log")
        try:
            served = asyncio.run(load_test(url, args, sources))
        finally:
            server.terminate()
            server.wait(120)
    lines = [line for line, _ in served["answers"]]
    start = time.perf_counter()
    offline = model.translate(lines)
    offline_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for request in served["sent"]:
        model.translate(request)
    per_request_seconds = time.perf_counter() - start
    result = {"run": args.run, "clients": args.clients, "sentences_per_request": args.sentences,
              "threads": args.threads, "requests": served["requests"], "failed": len(served["failures"]),
              "sentences": len(lines), "served_sentences_per_s": round(len(lines) / served["seconds"], 1),
              "p50_ms": round(served["p50_ms"], 1), "p99_ms": round(served["p99_ms"], 1),
              "offline_sentences_per_s": round(len(lines) / offline_seconds, 1),
              "offline_per_request_sentences_per_s": round(sum(map(len, served["sent"])) / per_request_seconds, 1),
              "identical": [text for _, text in served["answers"]] == [t.text for t in offline]}
    for failure in served["failures"][:5]:
        print(f"failed: {failure}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
