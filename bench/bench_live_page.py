"""What watching the vision page costs the edge node: the service's CPU with 0, 1 and 4 viewers, in one run.

    .venv/bin/python bench/bench_live_page.py                # 2 rounds of 3 phases of 15 s: about 100 s
    .venv/bin/python bench/bench_live_page.py --seconds 30 --every 1 --rounds 3

The real service (`python -m korall_workloads.vision`, the bundled CPU model, one interpreter thread) reads a
generated 640x480 MJPG video at 15 fps as its camera. A viewer does what the page's JavaScript does: it reads
/detections/stream, fetches /snapshot.jpg?boxes=false&quality=80 when a newer result than the one it drew has
arrived (at most 10 times a second, one at a time), and polls /health every 2 s. The page draws the boxes itself, so
the server's share is one JPEG encode per new frame, shared by every viewer (the snapshot keeps the last one), plus
the HTTP replies. The service's CPU time is read from /proc for each phase; the figures are the CPU added over the
no-viewer phase, in percent of one core, against the targets below, and the bytes a viewer receives per second.

For comparison, the cost the page avoids: the server drawing the boxes and encoding a frame per viewer
(draw_detections + encode_jpeg on the same frames, timed in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
from _service import cpu_seconds, free_port
from korall_tools.demo_video import moving_photo_frames, write_video
from korall_workloads.vision.camera.snapshot import draw_detections, encode_jpeg

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 640, 480, 15.0
MAX_FPS = 10.0  # the page's own cap (vision.js MAX_FPS)

TARGET_ONE_VIEWER = 5.0
"""Percent of one core that one viewer may add."""
TARGET_SHARING = 2.5
"""Four viewers may cost at most this many times one viewer (the encode is shared; only the replies multiply)."""


class Viewer:
    """One browser tab's worth of requests (see the module docstring); counts what it received."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0
        self.bytes = 0
        self.newest = -1
        self.drawn = -1
        self.new_result = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            tasks = [asyncio.create_task(c) for c in (self._stream(http), self._frames(http), self._health(http))]
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, http: httpx.AsyncClient) -> None:
        async with http.stream("GET", "/detections/stream") as reply:
            async for line in reply.aiter_lines():
                if line.startswith("id: "):
                    self.newest = max(self.newest, int(line[4:]))
                    self.new_result.set()

    async def _frames(self, http: httpx.AsyncClient) -> None:
        while True:
            while self.newest <= self.drawn:
                self.new_result.clear()
                await self.new_result.wait()
            began = time.monotonic()
            reply = await http.get("/snapshot.jpg", params={"boxes": "false", "quality": "80"})
            if reply.status_code == 200:
                self.drawn = max(self.drawn, int(reply.headers["x-frame-index"]))
                self.frames += 1
                self.bytes += len(reply.content)
            await asyncio.sleep(max(0.0, 1 / MAX_FPS - (time.monotonic() - began)))

    async def _health(self, http: httpx.AsyncClient) -> None:
        while True:
            await http.get("/health")
            await asyncio.sleep(2)


async def phase(url: str, pid: int, viewers: int, seconds: float) -> dict[str, float]:
    stop = asyncio.Event()
    crowd = [Viewer(url) for _ in range(viewers)]
    runs = [asyncio.create_task(v.run(stop)) for v in crowd]
    await asyncio.sleep(1.0)  # connected and fetching
    frames0 = [v.frames for v in crowd]
    bytes0 = [v.bytes for v in crowd]
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        health0 = (await http.get("/health")).json()["camera"]["frames_inferred"]
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        health1 = (await http.get("/health")).json()["camera"]["frames_inferred"]
    stop.set()
    await asyncio.gather(*runs)
    wall = wall1 - wall0
    return {
        "cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "inferred_fps": (health1 - health0) / wall,
        "fps_per_viewer": statistics.mean(v.frames - f for v, f in zip(crowd, frames0, strict=True)) / wall
        if crowd
        else 0.0,
        "kbytes_per_viewer_s": statistics.mean(v.bytes - b for v, b in zip(crowd, bytes0, strict=True)) / wall / 1024
        if crowd
        else 0.0,
    }


def server_side_drawing_ms(video: Path, url: str) -> float:
    """Median ms to draw the boxes and encode one frame on the server: what a server-annotated stream would pay
    per viewer and frame."""
    detections = httpx.get(f"{url}/detections").json()["detections"]
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(30)]
    capture.release()
    times = []
    for frame in frames * 2:
        t0 = time.perf_counter()
        encode_jpeg(draw_detections(frame, detections), 80)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--every", type=int, default=3, help="CAPTURE_SAMPLE_EVERY (3: a steady 5 inferences/s)")
    parser.add_argument("--rounds", type=int, default=2, help="the phases are run this many times, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.avi"
        write_video(video, moving_photo_frames(int(FPS * 8), width=WIDTH, height=HEIGHT), FPS)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "MODELS_DIR": str(ROOT / "models"),
            "NUM_THREADS": "1",
            "ACCELERATOR": "cpu",
            "CAPTURE_SOURCE": str(video),
            "CAPTURE_LOOP": "true",
            "CAPTURE_SAMPLE_EVERY": str(args.every),
            "LOG_LEVEL": "WARNING",
        }
        # The access log stays on, as in production, but its lines (stdout) would bury the table: dropped.
        proc = subprocess.Popen([sys.executable, "-m", "korall_workloads.vision"], env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/detections", timeout=2).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the vision service did not start")
                time.sleep(0.2)
            time.sleep(2)  # warm-up
            runs: dict[int, list[dict[str, float]]] = {0: [], 1: [], 4: []}
            for round_ in range(args.rounds):  # interleaved: a change in the machine's load hits every phase alike
                for viewers in runs:
                    print(f"round {round_ + 1}: {viewers} viewer(s) for {args.seconds:.0f} s ...", flush=True)
                    runs[viewers].append(asyncio.run(phase(url, proc.pid, viewers, args.seconds)))
            results = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
            drawing_ms = server_side_drawing_ms(video, url)
        finally:
            proc.terminate()
            proc.wait(15)

    base = results[0]["cpu_pct"]
    one = results[1]["cpu_pct"] - base
    four = results[4]["cpu_pct"] - base
    print(f"\nvision service, 640x480 @ {FPS:g} fps, inference on every {args.every} frame(s), CPU model, 1 thread")
    print(f"medians of {args.rounds} interleaved rounds of {args.seconds:g} s")
    header = ("viewers", "CPU % of a core", "added", "inferred fps", "frames/s each", "KiB/s each")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (8, 16, 7, 13, 14, 11), strict=True)))
    for viewers, r in results.items():
        added = r["cpu_pct"] - base
        print(
            f"{viewers:>8} {r['cpu_pct']:>16.1f} {added:>+7.1f} {r['inferred_fps']:>13.1f} "
            f"{r['fps_per_viewer']:>14.1f} {r['kbytes_per_viewer_s']:>11.0f}"
        )
    shown = results[1]["fps_per_viewer"]
    avoided = drawing_ms * shown * 4 / 10  # percent of a core: ms per frame x frames/s x viewers / 1000 x 100
    ok_one = one <= TARGET_ONE_VIEWER
    ok_share = four <= max(TARGET_SHARING * one, TARGET_ONE_VIEWER)
    print(f"one viewer adds {one:+.1f} % of a core (target <= {TARGET_ONE_VIEWER:g} %): {'PASS' if ok_one else 'FAIL'}")
    print(
        f"four viewers add {four:+.1f} % (target <= {TARGET_SHARING:g} x one viewer, or <= {TARGET_ONE_VIEWER:g} %): "
        f"{'PASS' if ok_share else 'FAIL'}"
    )
    print(
        f"for comparison, drawing and encoding per viewer on the server: {drawing_ms:.2f} ms a frame, "
        f"about {avoided:.1f} % of a core for four viewers at {shown:.1f} frames/s"
    )
    return 0 if ok_one and ok_share else 1


if __name__ == "__main__":
    sys.exit(main())
