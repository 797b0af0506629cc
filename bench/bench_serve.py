"""Load test of `dlsearch serve` (bounded, 127.0.0.1 only; it stops by itself).

    python bench/bench_serve.py load --out bench/results/serve_load.json        # catalog-only service (ReDial)
    python bench/bench_serve.py batching --out bench/results/serve_batching.json  # tiny direct-search model

load:     N requests (default 2,000), C concurrent (default 8) against `dlsearch serve --catalog` started as a
          subprocess: p50 / p99 latency, errors, the server's RSS at request 500 and at the last request.
batching: the same server config (tiny random model, same beams, same items: direct search only) started twice,
          with server.max_batch = 1 and = B; N requests at C concurrent each; throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
MESSAGES = ["I loved The Matrix, something similar?", "They loved Toy Story and Finding Nemo", "a scary movie for tonight",
            "any good heist films?", "I want a romantic comedy like Notting Hill", "something with dinosaurs"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    from dlsearch.app.search_server import free_port

    port = free_port()
    log = open(tempfile.mktemp(suffix=".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "dlsearch", "serve", *args, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start; see {log.name}")
        time.sleep(0.3)


async def hammer(url: str, n: int, concurrency: int, pid: int, k: int) -> dict:
    lat, errors, rss, done = [], 0, {}, 0
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal errors, done
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"messages": [{"role": "user", "content": f"{MESSAGES[i % len(MESSAGES)]} ({i})"}], "k": k}
            t0 = time.perf_counter()
            try:
                r = await c.post(url + "/v1/recommend", json=body)
                ok = r.status_code == 200 and isinstance(r.json().get("items"), list)
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t0)
            errors += not ok
            done += 1
            if done in (500, n):
                rss[done] = rss_mb(pid)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:
        await asyncio.gather(*[worker(c) for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    return {"requests": n, "concurrency": concurrency, "errors": errors, "wall_s": round(wall, 2),
            "throughput_rps": round(n / wall, 1), "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
            "rss_mb": {str(k_): round(v, 1) for k_, v in rss.items()}}


def uptime() -> str:
    return Path("/proc/loadavg").read_text().strip()


def cmd_load(a: argparse.Namespace) -> dict:
    from dlsearch.data.redial import load_redial

    with tempfile.TemporaryDirectory() as d:
        catalog = load_redial()[0]
        catalog.save_jsonl(Path(d) / "catalog.jsonl")
        proc, url = start(["--catalog", str(Path(d) / "catalog.jsonl")])
        try:
            res = asyncio.run(hammer(url, a.n, a.concurrency, proc.pid, 10))
            metrics = httpx.get(url + "/metrics").text
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    r500, rlast = res["rss_mb"]["500"], res["rss_mb"][str(a.n)]
    res.update(service="dlsearch serve --catalog (ReDial, BM25 + mention linking)", n_items=len(catalog),
               rss_growth_500_to_last=round(rlast / r500 - 1, 4),
               batches=[line for line in metrics.splitlines() if line.startswith("dlsearch_batch_size_count")])
    return res


def cmd_batching(a: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from decoding_fixtures import write_tiny_direct

    from dlsearch.data.redial import load_redial

    catalog = load_redial()[0]
    if a.items:
        catalog = catalog.subset([it.id for it in catalog][: a.items])
    out = {"model": "tiny random Llama (2 layers, 64 dims), direct search only", "n_items": len(catalog), "beams": a.beams}
    with tempfile.TemporaryDirectory() as d:
        cfg = write_tiny_direct(d, catalog, beams=a.beams, batch_size=a.max_batch)
        out["threads"] = cfg["server"]["threads"] = a.threads
        for name, mb in (("batch_1", 1), (f"batch_{a.max_batch}", a.max_batch)):
            cfg["server"]["max_batch"] = mb
            path = Path(d) / f"serve-{mb}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            proc, url = start(["--config", str(path)])
            try:
                asyncio.run(hammer(url, a.concurrency, a.concurrency, proc.pid, 5))  # warm-up
                out[name] = asyncio.run(hammer(url, a.n, a.concurrency, proc.pid, 5))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    out["speedup"] = round(out[f"batch_{a.max_batch}"]["throughput_rps"] / out["batch_1"]["throughput_rps"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["load", "batching"])
    p.add_argument("--n", type=int, default=None, help="requests (load: 2000, batching: 400)")
    p.add_argument("--concurrency", type=int, default=None, help="concurrent clients (load: 8, batching: 16)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--beams", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="server.threads (torch intra-op threads of the server)")
    p.add_argument("--items", type=int, default=None, help="first N catalog items (batching; default all)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.n = a.n or (2000 if a.what == "load" else 400)
    a.concurrency = a.concurrency or (8 if a.what == "load" else 16)
    start_load = uptime()
    res = cmd_load(a) if a.what == "load" else cmd_batching(a)
    res.update(loadavg_start=start_load, loadavg_end=uptime(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               command="python " + " ".join([f"bench/{Path(sys.argv[0]).name}"] + sys.argv[1:]), cpus=os.cpu_count())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
