"""The vision service under issue 15's attacks, as a real process with the sample pod's memory limit: memory and time.

    .venv/bin/python bench/bench_hardening.py          # about a minute

Part 1, memory: `python -m korall_workloads.vision` with MEMORY_LIMIT_BYTES = 384 MiB (samples/cpu-only.yaml), its
defaults otherwise, receives 8 concurrent requests of each worst case, then all kinds mixed:

- the issue's bombs: a 1.6 KB lossless WebP of 8000x5000 and a 40 MP RGBA PNG (refused from their header);
- the largest images the decode budget admits: a 10 MP RGBA PNG, a 5 MP lossless WebP, a 24 MP progressive JPEG;
- bodies of the maximum upload size (20 MiB of JPEG), which the upload budget sheds beyond 64 MiB held at once.

Printed per kind: the replies (status counts), the server's peak RSS (VmHWM, reset before each kind through
/proc/<pid>/clear_refs) against the 384 MiB limit, and its RSS after (memory given back).

Part 2, time: /health round trips (p50, p99) while the service is attacked: idle, 4 clients posting photos, 100
connections sending half a request head (slowloris), 8 clients sending 4 MB headers, a client posting 19 MB
multipart bodies of 380k parts one after the other (the issue's attack; each is refused at part 17 and the rest of
its body drained unparsed, so that the client reads the refusal: several clients doing so are a bandwidth flood the
event loop has to copy), 32 stalled uploads. Target: p99 under 50 ms in every case.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _service import free_port, start_vision
from PIL import Image

MIB = 1024 * 1024
LIMIT = 384 * MIB


def start_service(port: int) -> subprocess.Popen[bytes]:
    return start_vision(
        port,
        {
            "HTTP_ACCESS_LOG": "false",
            "MEMORY_LIMIT_BYTES": str(LIMIT),
            "RATE_LIMIT_PER_CLIENT": "",  # every attack comes from 127.0.0.1 here; the limits are not what is measured
            "RATE_LIMIT_PER_TOKEN": "",
        },
    )


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def worst_cases() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))  # 12 MP of noise: large JPEGs
    big = noise.resize((8000, 5000))
    jpeg = encode(big, "JPEG", quality=98)
    while len(jpeg) > 20 * MIB:  # the largest body MAX_UPLOAD_BYTES takes
        big = big.resize((big.width * 9 // 10, big.height * 9 // 10))
        jpeg = encode(big, "JPEG", quality=98)
    return {
        "WebP bomb 8000x5000 (1.6 KB)": encode(Image.new("RGB", (8000, 5000), (9, 9, 9)), "WEBP", lossless=True),
        "RGBA PNG 40 MP": encode(Image.new("RGBA", (8000, 5000), (1, 2, 3, 4)), "PNG", compress_level=1),
        "RGBA PNG 10 MP": encode(Image.new("RGBA", (4000, 2500), (1, 2, 3, 4)), "PNG", compress_level=1),
        "lossless WebP 5 MP": encode(Image.new("RGB", (2500, 2000), (120, 30, 200)), "WEBP", lossless=True),
        "progressive JPEG 24 MP": encode(noise.resize((6000, 4000)), "JPEG", quality=85, progressive=True),
        f"JPEG body {len(jpeg) / MIB:.1f} MiB": jpeg,
    }


async def post_all(port: int, bodies: list[bytes]) -> list[int]:
    async def one(body: bytes) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            return int(head[9:12])
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return 0
        finally:
            writer.close()

    return list(await asyncio.gather(*(one(b) for b in bodies)))


def part_memory(port: int, pid: int) -> bool:
    cases = worst_cases()
    print(f"\nPart 1: 8 concurrent requests of each kind, MEMORY_LIMIT_BYTES {LIMIT / MIB:.0f} MiB")
    print(f"{'kind':<30} {'replies':<24} {'peak RSS':>9} {'after':>7}  verdict")
    ok = True
    mixed = [body for body in cases.values() for _ in range(2)][:8]
    for name, bodies in [*((n, [b] * 8) for n, b in cases.items()), ("all kinds mixed", mixed)]:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        statuses = asyncio.run(post_all(port, bodies))
        peak, after = status_kb(pid, "VmHWM:"), status_kb(pid, "VmRSS:")
        counts = ", ".join(f"{statuses.count(s)}x{s}" for s in sorted(set(statuses)))
        passed = peak < LIMIT
        ok = ok and passed
        print(f"{name:<30} {counts:<24} {peak / MIB:>5.0f} MiB {after / MIB:>3.0f} MiB  {'PASS' if passed else 'FAIL'}")
    return ok


def health_latencies(port: int, seconds: float) -> list[float]:
    out: list[float] = []
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t = time.perf_counter()
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
        while len(body) < length:
            body += sock.recv(65536)
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    sock.close()
    return out


def attack(port: int, kind: str, stop: threading.Event) -> None:
    photo = encode(Image.new("RGB", (640, 480), (90, 120, 30)), "JPEG")
    socks: list[socket.socket] = []
    try:
        while not stop.is_set():
            if kind == "photos":
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(f"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(photo)}\r\n\r\n".encode())
                    s.sendall(photo)
                    s.recv(65536)
            elif kind == "slowloris" and len(socks) < 100:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /health HTTP/1.1\r\nX-")
                socks.append(s)
            elif kind == "huge headers":
                with socket.create_connection(("127.0.0.1", port)) as s, contextlib.suppress(OSError):
                    s.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 4 * MIB)
            elif kind == "multipart parts":
                body = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n" * 380_000 + b"--b--\r\n"
                with socket.create_connection(("127.0.0.1", port)) as s:
                    head = "POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
                    try:
                        s.sendall(body)
                        s.recv(65536)
                    except OSError:
                        pass
            elif kind == "stalled uploads" and len(socks) < 8:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n\xff\xd8")
                socks.append(s)
            else:
                stop.wait(0.05)
    finally:
        for s in socks:
            s.close()


def part_time(port: int) -> bool:
    print("\nPart 2: GET /health round trips (ms) during each attack, 6 s each")
    print(f"{'attack':<34} {'p50':>7} {'p99':>7} {'max':>7}  verdict (p99 < 50 ms)")
    ok = True
    for kind, clients in [
        ("idle", 0),
        ("photos", 4),
        ("slowloris", 1),
        ("huge headers", 8),
        ("multipart parts", 1),
        ("stalled uploads", 4),
    ]:
        stop = threading.Event()
        threads = [threading.Thread(target=attack, args=(port, kind, stop), daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        lat = health_latencies(port, 6.0)
        stop.set()
        for t in threads:
            t.join(30)
        p99 = float(np.percentile(lat, 99))
        passed = p99 < 50
        ok = ok and passed
        label = f"{kind} ({clients} clients)" if clients else kind
        print(
            f"{label:<34} {statistics.median(lat):>7.2f} {p99:>7.2f} {max(lat):>7.2f}  {'PASS' if passed else 'FAIL'}"
        )
        time.sleep(1.5)  # let the refused connections linger out
    return ok


def main() -> int:
    port = free_port()
    proc = start_service(port)
    try:
        print(f"vision service pid {proc.pid}, RSS at rest {status_kb(proc.pid, 'VmRSS:') / MIB:.0f} MiB")
        ok = part_memory(port, proc.pid)
        ok = part_time(port) and ok
        print(f"server RSS at the end {status_kb(proc.pid, 'VmRSS:') / MIB:.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
