"""Event delivery under a broker outage, with the real services: nothing lost, drain rate, latency, disk per event.

    .venv/bin/python bench/bench_events.py                    # the issue's 5-minute outage (about 6 minutes)
    .venv/bin/python bench/bench_events.py --outage-s 60      # what `make bench` runs (bench/run_all.py)

A real mosquitto (Debian's) on a loopback port; the vision service (`python -m korall_workloads.vision`) on the
demo video (the cat and the motorcycle taking turns, looped) and the audio service (`python -m
korall_workloads.audio`) on espeak-ng speech and sox noise paced in real time, both publishing to it; a
subscriber with a persistent session records every message and when it arrived.

1. online (--online-s): latency from an event's spooling (`created_time`) to the subscriber, p50 and p95;
2. outage (--outage-s): the broker is stopped while events keep coming; at its end, the spool's depth, its
   payload bytes and its growth on disk (database + WAL) per waiting event;
3. recovery: the broker is started again; the drain rate is the waiting events over the time from the first of
   them to the last reaching the subscriber (the reconnect backoff is capped at 2 s here and not counted);
4. every sequence number of both sources from 1 to the last must have arrived: 0 lost, checked with the
   consumer command's ledger (`korall_workloads.events.ledger`).
Then, in this process, the drain rate of a much fuller spool (--spool-events, default 20000 object events),
which a short outage cannot fill.

The broker helper is the tests' (tests/workloads/mqtt_broker.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "workloads"))

from korall_tools.demo_video import moving_photo_frames, write_video  # noqa: E402
from korall_tools.synth import Segment, build_scene, tools_missing, write_wav  # noqa: E402
from korall_workloads.common.delivery import EventDelivery  # noqa: E402
from korall_workloads.common.event_payload import Event  # noqa: E402
from korall_workloads.common.event_settings import EventsSettings  # noqa: E402
from korall_workloads.events.ledger import Ledger  # noqa: E402
from mqtt_broker import Mosquitto, Subscriber, free_port, wait_until  # noqa: E402

TARGET_LATENCY_P95_MS = 100.0
TARGET_DRAIN_PER_S = 1000.0
TARGET_DISK_PER_EVENT = 2048.0

SCENE = [
    Segment("silence", 1.0),
    Segment("speech", text="Someone is at the front door.", voice="en"),
    Segment("silence", 1.0),
    Segment("loud_noise", 0.4),
    Segment("silence", 1.0),
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def make_media(workdir: Path, seconds: float) -> tuple[Path, Path]:
    video = workdir / "demo.avi"
    write_video(video, moving_photo_frames(60, photos=("chelsea", "motorcycle_left")), 15.0)  # 4 s, looped
    scene = build_scene(SCENE, workdir)
    repeats = int(seconds / scene.seconds) + 2
    wav = write_wav(workdir / "long.wav", np.tile(scene.samples, repeats))
    return video, wav


class Service:
    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, **env, "PORT": str(self.port), "LOG_LEVEL": "WARNING"}
        self.proc = subprocess.Popen([sys.executable, "-m", module], env=full, stderr=subprocess.DEVNULL)
        wait_until(self._up, 90, f"{module} to answer")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def events(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=5).json()["events"]
        return body

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def real_services(args: argparse.Namespace, workdir: Path) -> bool:
    print(f"online {args.online_s:g} s, outage {args.outage_s:g} s; preparing the media...", flush=True)
    video, wav = make_media(workdir, args.online_s + args.outage_s + 120)
    common = {
        "EVENTS_RECONNECT_MIN_S": "0.5",
        "EVENTS_RECONNECT_MAX_S": "2",
        "EVENTS_HEARTBEAT_S": "5",
        "EVENTS_SOURCE_NAMESPACE": "bench",
    }
    ok = True
    with Mosquitto(workdir / "broker") as broker, Subscriber(broker, ["korall/bench/+/events"], "bench") as sub:
        common["EVENTS_MQTT_URL"] = broker.url
        vision = Service(
            "korall_workloads.vision",
            {
                **common,
                "ACCELERATOR": "cpu",
                "NUM_THREADS": "1",
                "CAPTURE_SOURCE": str(video),
                "CAPTURE_LOOP": "true",
                "CAPTURE_SAMPLE_EVERY": "2",
                "EVENTS_OBJECT_END_AFTER_S": "0.5",
                "EVENTS_OBJECT_UPDATE_INTERVAL_S": "0.5",
                "EVENTS_SPOOL_DIR": str(workdir / "spool-vision"),
                "EVENTS_SOURCE_NAME": "cam",
            },
        )
        audio = Service(
            "korall_workloads.audio",
            {
                **common,
                "AUDIO_SOURCE": str(wav),
                "EVENTS_SPOOL_DIR": str(workdir / "spool-audio"),
                "EVENTS_SOURCE_NAME": "mic",
            },
        )
        services = {"vision": vision, "audio": audio}
        try:
            time.sleep(args.online_s)
            online = sub.events()
            online_at = sub.on("/events")
            latency = {"vision": [], "audio": []}
            for message, event in zip(online_at, online, strict=True):
                latency[event["source"]["service"]].append((message.at - event["created_time"]) * 1000)
            empty_disk = {name: s.events()["spool"]["file_bytes"] for name, s in services.items()}

            print(f"broker stopped for {args.outage_s:g} s; events keep coming...", flush=True)
            broker.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < args.outage_s:
                time.sleep(min(30.0, args.outage_s - (time.monotonic() - stopped)))
                left = args.outage_s - (time.monotonic() - stopped)
                depth = {name: s.events()["spool"]["depth"] for name, s in services.items()}
                print(f"  {left:5.0f} s left, waiting: {depth}", flush=True)
            during = {name: s.events() for name, s in services.items()}
            waiting = sum(d["spool"]["depth"] for d in during.values())
            payload = sum(d["spool"]["payload_bytes"] for d in during.values())
            disk = sum(d["spool"]["file_bytes"] for d in during.values())
            growth = sum(d["spool"]["file_bytes"] - empty_disk[n] for n, d in during.items())
            received_before = len(sub.on("/events"))

            broker.start()
            restarted = time.time()
            wait_until(
                lambda: all(s.events()["spool"]["depth"] == 0 for s in services.values()), 120, "the spools to drain"
            )
            lasts = {name: s.events()["last_seq"] for name, s in services.items()}
            wait_until(lambda: _received_up_to(sub, lasts), 60, "the subscriber to have everything")
            after = sub.on("/events")[received_before:]
            drained = [m for m in after if m.json()["created_time"] < restarted]  # spooled during the outage
            spans = {}  # per service: the drain runs from its first to its last outage event at the subscriber
            for name in services:
                mine = [m for m in drained if m.json()["source"]["service"] == name]
                if len(mine) > 1:
                    spans[name] = (len(mine), mine[-1].at - mine[0].at, mine[0].at - restarted)
        finally:
            for service in services.values():
                service.stop()
        time.sleep(0.5)
        ledger = Ledger(from_seq=1)
        for event in sub.events():
            ledger.event(event)
        summary = ledger.summary()

    all_latency = latency["vision"] + latency["audio"]
    lost = sum(s["missing"] for s in summary.values())
    dups = sum(s["duplicates"] for s in summary.values())
    per_event_growth = growth / waiting if waiting else float("nan")
    print()
    print(f"{'figure':58} {'value':>14} {'target':>12}")
    for service in ("vision", "audio"):
        values = latency[service]
        print(f"{'online latency, ' + service + ' (events)':58} {len(values):>14}")
        print(f"{'  spooled -> subscriber p50 / p95 (ms)':58} {pct(values, 50):>6.1f} / {pct(values, 95):5.1f}")
    p95 = pct(all_latency, 95)
    ok &= p95 <= TARGET_LATENCY_P95_MS
    print(
        f"{'online latency, both p50 / p95 (ms)':58} {pct(all_latency, 50):>6.1f} / {p95:5.1f} "
        f"{'<= ' + str(TARGET_LATENCY_P95_MS):>12} {verdict(p95 <= TARGET_LATENCY_P95_MS)}"
    )
    print(f"{'events waiting at the end of the outage':58} {waiting:>14}")
    print(f"{'  payload bytes per waiting event':58} {payload / max(1, waiting):>14.0f}")
    print(f"{'  both spools on disk (db + WAL, KiB)':58} {disk / 1024:>14.0f}")
    print(f"{'  growth on disk per waiting event (db + WAL, B)':58} {per_event_growth:>14.0f}")
    for name, (count, span, reconnect) in spans.items():
        rate = count / span if span > 0 else float("nan")
        print(f"{name + ': reconnected after the broker restarted (s)':58} {reconnect:>14.2f}")
        print(f"{'  drained: events, first to last (s), events/s':58} {count:>5} / {span:5.2f} / {rate:5.0f}")
    for key, s in summary.items():
        print(f"{'sequence ' + key:58} {s['first']}..{s['last']}, {s['received']} received, {s['duplicates']} dup")
    ok &= lost == 0
    print(f"{'lost (missing sequence numbers, both sources)':58} {lost:>14} {'0':>12} {verdict(lost == 0)}")
    print(f"{'duplicates (allowed, dropped by the consumer)':58} {dups:>14}")
    ok &= len(summary) == 2 and all(s["received"] > 0 for s in summary.values())
    return ok


def _received_up_to(sub: Subscriber, lasts: dict[str, int]) -> bool:
    got: dict[str, set[int]] = {"vision": set(), "audio": set()}
    for event in sub.events():
        got[event["source"]["service"]].add(event["seq"])
    return all(got[name] >= set(range(1, last + 1)) for name, last in lasts.items())


def full_spool_drain(count: int, workdir: Path) -> bool:
    """Fill a spool with `count` object events while the broker is down, then time the drain to a subscriber."""
    logging.getLogger("korall.events").setLevel(logging.ERROR)  # the outage is on purpose
    with Mosquitto(workdir / "broker-full") as broker:
        settings = EventsSettings(
            mqtt_url=broker.url,
            spool_dir=workdir / "spool-full",
            reconnect_min_s=0.2,
            reconnect_max_s=0.2,
            spool_max_events=count + 10,
            source_name="full",
        )
        with Subscriber(broker, ["korall/+/full/events"], "bench-full"):
            pass  # a persistent session: the broker queues the drain for it from the first message on
        broker.stop()
        delivery = EventDelivery(settings, "vision")
        delivery.start()
        box = {"xmin": 10.0, "ymin": 20.0, "xmax": 300.0, "ymax": 400.0}
        norm = {"xmin": 0.016, "ymin": 0.042, "xmax": 0.469, "ymax": 0.833}
        model = {"name": "ssd_mobilenet_v2_coco", "sha256": "0" * 64}
        began = time.perf_counter()
        for i in range(count):
            now = time.time()
            sighting = {"score": 0.87, "box": box, "box_norm": norm, "time": now, "count": 1}
            data = {"label": "person", "best": sighting, "last": sighting, "frames": i + 1, "count": 1}
            data |= {"image": {"width": 640, "height": 480}, "end_reason": None}
            delivery.emit(Event("object.update", now, now, None, data, model=model))
        spool_s = time.perf_counter() - began
        spool = delivery.status()["spool"]
        with sqlite3.connect(spool["path"]) as db:  # what the WAL holds moves into the database, as SQLite does
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db_bytes = os.path.getsize(spool["path"])
        with Subscriber(broker.start(), ["korall/+/full/events"], "bench-full") as sub:
            started = time.perf_counter()
            wait_until(lambda: delivery.status()["spool"]["depth"] == 0, 300, "the full spool to drain", every=0.01)
            acked_s = time.perf_counter() - started
            wait_until(lambda: len(sub.on("/events")) >= count, 60, "the subscriber", every=0.01)
            arrivals = [m.at for m in sub.on("/events")]
            delivery.stop()
        seqs = [e["seq"] for e in sub.events()]
    first_to_last = arrivals[-1] - arrivals[0]
    rate = count / first_to_last if first_to_last > 0 else float("nan")
    per_event = db_bytes / count
    ok = seqs[:count] == list(range(1, count + 1)) and rate >= TARGET_DRAIN_PER_S and per_event <= TARGET_DISK_PER_EVENT
    print()
    print(f"{'full spool: events spooled (fsync each), rate /s':58} {count:>7} / {count / spool_s:5.0f}")
    print(f"{'  payload bytes per event':58} {spool['payload_bytes'] / count:>14.0f}")
    print(f"{'  db + WAL on disk, bytes per event':58} {spool['file_bytes'] / count:>14.0f}")
    print(
        f"{'  database after a checkpoint, bytes per event':58} {per_event:>14.0f} "
        f"{'<= ' + str(int(TARGET_DISK_PER_EVENT)):>12} {verdict(per_event <= TARGET_DISK_PER_EVENT)}"
    )
    print(f"{'  reconnect + drain until the spool is empty (s)':58} {acked_s:>14.2f}")
    print(
        f"{'  drain rate, first to last at the subscriber (events/s)':58} {rate:>14.0f} "
        f"{'>= ' + str(int(TARGET_DRAIN_PER_S)):>12} {verdict(rate >= TARGET_DRAIN_PER_S)}"
    )
    print(f"{'  all arrived, in order':58} {seqs[:count] == list(range(1, count + 1))!s:>14}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--online-s", type=float, default=30.0, help="online phase (latency)")
    parser.add_argument("--outage-s", type=float, default=300.0, help="broker outage (the issue: 5 minutes)")
    parser.add_argument("--spool-events", type=int, default=20_000, help="events in the full-spool drain")
    args = parser.parse_args(argv)
    missing = tools_missing()
    if missing:
        print(f"needs {', '.join(missing)} (make sysdeps)")
        return 1
    with tempfile.TemporaryDirectory(prefix="korall-bench-events-") as tmp:
        workdir = Path(tmp)
        ok = real_services(args, workdir)
        ok &= full_spool_drain(args.spool_events, workdir)
    print(f"\noverall: {verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
