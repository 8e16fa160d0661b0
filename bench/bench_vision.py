"""The vision service against the bare interpreter, in one run: what does HTTP, decoding and queuing cost?

    .venv/bin/python bench/bench_vision.py                      # about a minute
    .venv/bin/python bench/bench_vision.py --invokes 20 --rounds 3 --per-round 40 --threads 2

Part 1, the interpreter alone: N invokes after warm-up per model in models/manifest.json, median and p95
invoke_ms (the Edge TPU build needs libedgetpu and a TPU: without them it is skipped, with the reason).

Part 2, the service: `python -m korall_workloads.vision` as a real process (uvloop + httptools, same model; one
single-threaded interpreter per core, as it runs by default on a CPU node) receives the same 640x480 JPEG
(scikit-image's chelsea photo) at concurrency 1 and 4, hardened as in production (issue 15): a bearer token checked
against a token file, rate limits counted (set high enough never to refuse), one access log line per request.
The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams, so that the client takes
as little as possible of the two cores the server needs. The run is split into rounds, each measuring raw
invokes (server idle), then concurrency 1, then concurrency 4, so that load from other processes hits the
reference and the service alike; the targets compare figures of the same round (median over rounds).
Printed: p50/p95 latency, throughput, the overhead over raw invoke, the server's RSS (peak), and the
server-side timing breakdown, each against its target. The c=1 overhead is also measured pair by pair (a raw invoke,
then at once one request; the median of the differences), the figure least moved by other processes' load:

- /infer p50 at concurrency 1 <= raw invoke p50 + 3 ms (the raw invoke single-threaded, as each interpreter is);
- throughput at concurrency 4 >= 0.9 x cores x 1000 / raw invoke p50 (one interpreter per core, side by side);
  also printed against raw interpreters invoking side by side in the same round (one thread each), which says
  what the cores really gave: on a shared machine two side by side may deliver far less than twice one;
  and against the CPU each request took at c=4 (the server's and the load generator's, from /proc): the cores
  cap the throughput at cores / CPU per request, so raw invoke / CPU per request is the most the ratio can reach
  on this machine, however the work is scheduled;
- server RSS <= 250 MB.

Other processes on the machine skew single figures; the targets are ratios of figures measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import skimage
from _service import cpu_seconds, free_port, start_vision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def usable_cores() -> int:
    from korall_workloads.vision.settings import usable_cores as cores

    return cores()


# -- part 1: the interpreter alone --------------------------------------------------------------------------------


def make_interpreter(model_file: Path, threads: int) -> object:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_file), num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    image = Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB")
    tensor = np.asarray(image.resize((int(detail["shape"][2]), int(detail["shape"][1]))))[np.newaxis]
    interp.set_tensor(detail["index"], tensor)
    for _ in range(5):
        interp.invoke()
    return interp


def raw_parallel(interps: list[object], invokes: int) -> float:
    """Invokes per second of `interps` invoking side by side, one thread each (LiteRT releases the GIL): what the
    cores this round gives really deliver, the reference of the service's throughput at c=4. The sum of each
    thread's own rate: the wall time of all of them together would also count a thread's start-up and the last
    invokes of one running alone (with 7 invokes each, one invoke of skew understated the cores by 7 %)."""
    rates: list[float] = []

    def run(interp: object) -> None:
        times = raw_invoke(interp, invokes)
        rates.append(1000 * len(times) / sum(times))

    threads = [threading.Thread(target=run, args=(i,)) for i in interps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(rates)


def raw_invoke(interp: object, invokes: int) -> list[float]:
    times = []
    for _ in range(invokes):
        t = time.perf_counter()
        interp.invoke()  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t) * 1000)
    return times


def bench_models(threads: int, invokes: int) -> tuple[float, object]:
    """Print the raw invoke table; return the CPU model's p50 and its interpreter (the reference of part 2)."""
    from korall_workloads.vision.runtime import EdgeTpuUnavailable, load_edgetpu_delegate

    manifest = json.loads((MODELS / "manifest.json").read_text())
    print(f"\nPart 1: the interpreter alone, {invokes} invokes after 5 warm-up, {threads} thread(s)")
    print(f"{'model':<36} {'accelerator':<11} {'p50 ms':>8} {'p95 ms':>8}")
    cpu_p50, cpu_interp = float("nan"), None
    for entry in manifest["models"]:
        if entry["edgetpu"]:
            try:
                load_edgetpu_delegate("usb")
            except EdgeTpuUnavailable as exc:
                print(f"{entry['name']:<36} {'edgetpu':<11} {'skipped':>8}  ({exc})")
                continue
            print(f"{entry['name']:<36} {'edgetpu':<11} {'skipped':>8}  (a TPU is present: run bench_models.py)")
            continue
        interp = make_interpreter(MODELS / entry["file"], threads)
        times = raw_invoke(interp, invokes)
        p50 = statistics.median(times)
        if cpu_interp is None:
            cpu_p50, cpu_interp = p50, interp
        print(f"{entry['name']:<36} {'cpu':<11} {p50:>8.2f} {pct(times, 95):>8.2f}")
    return cpu_p50, cpu_interp


# -- part 2: the service ------------------------------------------------------------------------------------------


TOKEN = secrets.token_urlsafe(32)


def start_service(port: int, threads: int, tokens_file: Path) -> subprocess.Popen[bytes]:
    tokens_file.write_text(f"bench sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()} infer,read\n")
    return start_vision(
        port,
        {
            "NUM_THREADS": str(threads),
            "AUTH_TOKENS_FILE": str(tokens_file),
            "RATE_LIMIT_PER_CLIENT": "10000/second",  # counted on every request, never refusing one here
            "RATE_LIMIT_PER_TOKEN": "10000/second",
        },
    )


class Conn:
    """One keep-alive HTTP/1.1 connection that posts the same prebuilt request and reads the JSON reply."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port, self.request = port, request

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self) -> tuple[int, bytes]:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(port: int, request: bytes, concurrency: int, total: int) -> tuple[list[float], float, list[dict]]:
    conns = [Conn(port, request) for _ in range(concurrency)]
    for c in conns:
        await c.open()
    latencies: list[float] = []
    timings: list[dict] = []
    remaining = total

    async def worker(conn: Conn) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            status, body = await conn.post()
            latencies.append((time.perf_counter() - t) * 1000)
            if status != 200:
                raise SystemExit(f"/infer answered {status}: {body[:200]!r}")
            timings.append(json.loads(body)["timings_ms"])

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - start
    for c in conns:
        c.close()
    return latencies, total / wall, timings


async def load_raw(port: int, request: bytes, total: int) -> list[float]:
    """Latencies of `total` sequential requests on one connection, any status."""
    conn = Conn(port, request)
    await conn.open()
    latencies = []
    for _ in range(total):
        t = time.perf_counter()
        await conn.post()
        latencies.append((time.perf_counter() - t) * 1000)
    conn.close()
    return latencies


async def interleaved(port: int, request: bytes, interp: object, pairs: int) -> list[tuple[float, float, dict]]:
    """(raw invoke ms, /infer ms, server timings) for `pairs` raw invokes each followed at once by one request at
    concurrency 1: the two halves of a pair are measured within milliseconds of each other, so a load change on a
    shared machine (which moves figures by whole milliseconds over seconds) hits both alike."""
    conn = Conn(port, request)
    await conn.open()
    out = []
    for _ in range(pairs):
        t = time.perf_counter()
        interp.invoke()  # type: ignore[attr-defined]
        raw = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        status, body = await conn.post()
        if status != 200:
            raise SystemExit(f"/infer answered {status}: {body[:200]!r}")
        out.append((raw, (time.perf_counter() - t) * 1000, json.loads(body)["timings_ms"]))
    conn.close()
    return out


def rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def bench_service(threads: int, rounds: int, per_round: int, interp: object, others: list[object]) -> bool:
    photo = Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB").resize((640, 480))
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    port = free_port()
    request = (
        f"POST /infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode() + jpeg
    tokens_dir = tempfile.TemporaryDirectory()
    proc = start_service(port, threads, Path(tokens_dir.name) / "tokens")
    raw: list[list[float]] = []
    pairs: list[tuple[float, float, dict]] = []
    parallel: list[float] = []
    c1: list[tuple[list[float], float, list[dict]]] = []
    c4: list[tuple[list[float], float, list[dict]]] = []
    c4_cpu = [0.0, 0.0]  # CPU seconds during the c=4 loads: the server's, the load generator's (this process)
    try:
        asyncio.run(load(port, request, 4, 40))  # warm-up: connections, caches, allocator
        for _ in range(rounds):
            raw.append(raw_invoke(interp, per_round // 2))
            parallel.append(raw_parallel([interp, *others], per_round // 2))
            c1.append(asyncio.run(load(port, request, 1, per_round)))
            pairs.extend(asyncio.run(interleaved(port, request, interp, per_round)))
            server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
            c4.append(asyncio.run(load(port, request, 4, 2 * per_round)))
            c4_cpu[0] += cpu_seconds(proc.pid) - server_cpu
            c4_cpu[1] += time.process_time() - client_cpu
        rss, peak = rss_mb(proc.pid)
        health = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        floor = statistics.median(asyncio.run(load_raw(port, health, 200)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        tokens_dir.cleanup()

    raw_all = [t for r in raw for t in r]
    raw_p50 = statistics.median(raw_all)
    print(
        f"\nPart 2: the service, POST /infer of a 640x480 JPEG ({len(jpeg)} bytes), {rounds} rounds of "
        f"{per_round // 2} raw invokes, {per_round} requests at c=1, {2 * per_round} at c=4"
    )
    print(f"{'':>14} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}   server-side medians (ms)")
    print(f"{'raw invoke':>14} {raw_p50:>8.2f} {pct(raw_all, 95):>8.2f} {1000 / raw_p50:>8.1f}   (server idle)")
    for name, runs in (("concurrency 1", c1), ("concurrency 4", c4)):
        lat = [x for r in runs for x in r[0]]
        timings = [t for r in runs for t in r[2]]
        rps = statistics.median(r[1] for r in runs)
        med = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
        parts = " ".join(f"{k} {v:.2f}" for k, v in med.items())
        print(f"{name:>14} {statistics.median(lat):>8.2f} {pct(lat, 95):>8.2f} {rps:>8.1f}   {parts}")

    # paired per round: each round's service figures against that round's raw invokes
    overheads = [statistics.median(c[0]) - statistics.median(r) for c, r in zip(c1, raw, strict=True)]
    cores = usable_cores()
    ratios = [c[1] * statistics.median(r) / 1000 / cores for c, r in zip(c4, raw, strict=True)]
    # the same throughput against what the machine gave this round: raw interpreters side by side, one per core
    available = [c[1] / p for c, p in zip(c4, parallel, strict=True)]
    scaling = [p * statistics.median(r) / 1000 / cores for p, r in zip(parallel, raw, strict=True)]
    overhead, ratio = statistics.median(overheads), statistics.median(ratios)
    rps_4 = statistics.median(c[1] for c in c4)
    c1_lat = statistics.median(x for r in c1 for x in r[0])
    c1_total = statistics.median(t["total"] for r in c1 for t in r[2])
    c1_invoke = statistics.median(t["invoke"] for r in c1 for t in r[2])
    print(
        f"\nwhere the c=1 overhead goes: inside the service (total - invoke) {c1_total - c1_invoke:.2f} ms, "
        f"outside it (client p50 - server total) {c1_lat - c1_total:.2f} ms; "
        f"HTTP floor (GET /health round trip) {floor:.2f} ms"
    )
    # pairs: each request against the raw invoke measured just before it
    paired = statistics.median(lat - r for r, lat, _ in pairs)
    paired_invoke = statistics.median(t["invoke"] - r for r, _, t in pairs)
    paired_inside = statistics.median(t["total"] - t["invoke"] for _, _, t in pairs)
    paired_outside = statistics.median(lat - t["total"] for _, lat, t in pairs)
    print(
        f"paired one by one ({len(pairs)} pairs: a raw invoke, then one request): /infer minus raw invoke "
        f"{paired:+.2f} ms = invoke in the service minus raw {paired_invoke:+.2f}, the rest inside the service "
        f"{paired_inside:.2f}, outside it {paired_outside:.2f} (medians of each, so they need not add up)"
    )
    # At c=4 the cores are the limit: throughput is at most cores / (CPU per request, server and load generator),
    # so raw invoke / CPU per request is the most the c=4 ratio can reach on this machine, whatever the scheduling.
    c4_requests = sum(len(c[0]) for c in c4)
    server_ms, client_ms = (1000 * cpu / c4_requests for cpu in c4_cpu)
    c4_invoke = statistics.median(t["invoke"] for r in c4 for t in r[2])
    print(
        f"CPU per request at c=4: server {server_ms:.2f} ms, load generator {client_ms:.2f} ms, against "
        f"{raw_p50:.2f} ms for a raw invoke alone: on {cores} cores the c=4 ratio can reach at most "
        f"{raw_p50 / (server_ms + client_ms):.2f} x ({raw_p50 / server_ms:.2f} x with the load generator elsewhere); "
        f"the invoke's wall time in the service at c=4 {c4_invoke:.2f} ms"
    )
    rows = [
        ("/infer p50 at c=1 minus raw invoke p50", f"{overhead:+.2f} ms", "<= +3.00 ms", overhead <= 3.0),
        ("  the same, paired request by request", f"{paired:+.2f} ms", "<= +3.00 ms", None),
        (f"throughput at c=4 / ({cores} x 1000 / raw invoke p50)", f"{ratio:.2f} x", ">= 0.90 x", ratio >= 0.90),
        ("  throughput at c=4", f"{rps_4:.1f} req/s", f"({0.9 * cores * 1000 / raw_p50:.1f})", None),
        (
            f"  raw: {cores} interpreters side by side / {cores} x one",
            f"{statistics.median(scaling):.2f} x",
            "(cores free?)",
            None,
        ),
        ("  throughput at c=4 / raw side by side", f"{statistics.median(available):.2f} x", "", None),
        ("server RSS, peak (VmHWM)", f"{peak:.0f} MB", "<= 250 MB", peak <= 250),
        ("server RSS at the end", f"{rss:.0f} MB", "", None),
    ]
    print(f"\n{'figure (median over rounds)':<46} {'measured':>12} {'target':>12}  verdict")
    ok = True
    for name, measured, target, passed in rows:
        ok = ok and passed is not False
        print(f"{name:<46} {measured:>12} {target:>12}  {'' if passed is None else verdict(passed)}")
    print("per round, overhead ms: " + " ".join(f"{v:+.2f}" for v in overheads))
    print("per round, c=4 ratio:   " + " ".join(f"{v:.2f}" for v in ratios))
    print("per round, raw scaling: " + " ".join(f"{v:.2f}" for v in scaling))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invokes", type=int, default=50, help="raw invokes per model (default 50)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of raw / c=1 / c=4 in part 2 (default 12)")
    parser.add_argument("--per-round", type=int, default=30, help="c=1 requests per round (c=4: twice, raw: half)")
    parser.add_argument("--threads", type=int, default=1, help="threads per interpreter (default 1, as the service)")
    args = parser.parse_args()
    threads = args.threads
    print(
        f"vision bench: {usable_cores()} cores, NUM_THREADS={threads} per interpreter (raw and in the service), "
        f"{usable_cores()} interpreters in the service"
    )
    _, interp = bench_models(threads, args.invokes)
    manifest = json.loads((MODELS / "manifest.json").read_text())
    cpu_model = MODELS / next(m["file"] for m in manifest["models"] if not m["edgetpu"])
    others = [make_interpreter(cpu_model, threads) for _ in range(usable_cores() - 1)]
    ok = bench_service(threads, args.rounds, args.per_round, interp, others)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
