"""`python -m korall_workloads.vision.tpu_wake`: load a USB Accelerator's firmware as soon as it is plugged in, so
that a device plugin can grant it to an unprivileged pod. The chart runs it on the nodes as the privileged
DaemonSet `<release>-tpu-wake` (charts/korall/templates/tpu-wake.yaml).

Why it exists: the USB Accelerator enumerates as 1a6e:089a, takes its firmware from the first program that opens
it, and comes back as 18d1:9302 under a NEW device node (/dev/bus/usb/BBB/DDD, a new device number). A device
plugin grants device nodes, and the container runtime opens the device cgroup for exactly those, by major:minor:
a pod granted the boot-mode node loses the accelerator the moment its own libedgetpu loads the firmware. Woken
here first, the accelerator is advertised (as 18d1:9302 only) with the node it keeps from then on.

Every `--interval` seconds:
- the Coral USB devices are read from sysfs (idVendor, idProduct, busnum, devnum);
- if one is in its boot id, the Edge TPU delegate is opened on `usb:0` and closed again: libedgetpu lists the
  boot-mode accelerators before the awake ones (it enumerates 1a6e:089a, then 18d1:9302), so this is a booting
  accelerator, never one a workload holds. Opening it loads the firmware;
- every accelerator's node is given to `--group`, read-write for the group: what Coral's udev rule does (plugdev),
  so no package is needed on the node, and the pods (uid 10001, the group among their supplementalGroups) can
  open it.
A failure is logged and tried again, less often while it keeps failing; nothing ends the loop but a signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from korall_workloads.common.logs import configure_logging

log = logging.getLogger("korall.tpu_wake")

BOOT_ID = ("1a6e", "089a")
"""The USB Accelerator before its firmware is loaded (Global Unichip)."""
AWAKE_ID = ("18d1", "9302")
"""The USB Accelerator after (Google): the id the device plugin advertises."""
SYSFS_USB = Path("/sys/bus/usb/devices")
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class Accelerator:
    """A USB Accelerator as sysfs shows it: where it is on the bus and whether its firmware is loaded."""

    port: str  # the sysfs name, e.g. 2-1: the physical port, which the re-enumeration keeps
    vendor: str
    product: str
    bus: int
    device: int

    @property
    def booting(self) -> bool:
        return (self.vendor, self.product) == BOOT_ID

    def node(self, dev_root: Path) -> Path:
        return dev_root / "dev" / "bus" / "usb" / f"{self.bus:03d}" / f"{self.device:03d}"


def accelerators(sysfs: Path = SYSFS_USB) -> list[Accelerator]:
    """Every USB Accelerator on the node, booting or awake, by port."""
    found = []
    for entry in sorted(sysfs.glob("*")):
        try:
            ident = ((entry / "idVendor").read_text().strip(), (entry / "idProduct").read_text().strip())
            if ident not in (BOOT_ID, AWAKE_ID):
                continue
            bus, device = int((entry / "busnum").read_text()), int((entry / "devnum").read_text())
        except (OSError, ValueError):  # a hub's interface folder, or a device that left while being read
            continue
        found.append(Accelerator(entry.name, ident[0], ident[1], bus, device))
    return found


def give_to_group(node: Path, gid: int) -> bool:
    """Make `node` belong to group `gid`, readable and writable by it; True if anything changed."""
    info = node.stat()
    mode = stat.S_IMODE(info.st_mode)
    wanted = mode | stat.S_IRGRP | stat.S_IWGRP
    changed = False
    if info.st_gid != gid:
        os.chown(node, -1, gid)
        changed = True
    if mode != wanted:
        node.chmod(wanted)
        changed = True
    return changed


def open_booting_accelerator() -> None:
    """Open (and close) the Edge TPU delegate on the first accelerator libedgetpu lists: a booting one, when there
    is one. Raises the runtime's EdgeTpuUnavailable with the reason."""
    from korall_workloads.vision.runtime import load_edgetpu_delegate

    delegate = load_edgetpu_delegate("usb:0")
    del delegate  # closing it leaves the accelerator awake


@dataclass
class Waker:
    """One node's accelerators, woken and handed to the device group (one `round()` at a time)."""

    group: int
    sysfs: Path = SYSFS_USB
    dev_root: Path = Path("/")
    open_tpu: Callable[[], None] = open_booting_accelerator

    def round(self) -> bool:
        """Wake what boots, hand every node to the group; False when something failed (it is tried again)."""
        ok = True
        found = accelerators(self.sysfs)
        if any(a.booting for a in found):
            booting = [a.port for a in found if a.booting]
            try:
                self.open_tpu()
            except Exception as exc:  # libedgetpu's reason, whatever it raises: log it and try again
                log.warning("could not load the firmware of the accelerator at %s: %s", ", ".join(booting), exc)
                ok = False
            else:
                log.info("loaded the firmware of the accelerator at %s", ", ".join(booting))
            found = accelerators(self.sysfs)
        for accelerator in found:
            node = accelerator.node(self.dev_root)
            try:
                if give_to_group(node, self.group):
                    log.info("gave %s (%s:%s) to group %d", node, accelerator.vendor, accelerator.product, self.group)
            except FileNotFoundError:  # re-enumerating right now: the next round sees its new node
                ok = False
            except OSError as exc:
                log.warning("could not give %s to group %d: %s", node, self.group, exc)
                ok = False
        return ok

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Rounds until `stop` is set; after a failed round the next comes later (up to MAX_BACKOFF_S)."""
        delay = interval_s
        while not stop.is_set():
            try:
                ok = self.round()
            except OSError as exc:  # sysfs itself unreadable
                log.warning("cannot read %s: %s", self.sysfs, exc)
                ok = False
            delay = interval_s if ok else min(delay * 2, MAX_BACKOFF_S)
            stop.wait(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m korall_workloads.vision.tpu_wake", description=__doc__)
    parser.add_argument("--group", type=int, required=True, help="GID that gets the accelerators' nodes (plugdev)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two looks at the bus")
    parser.add_argument("--sysfs", type=Path, default=SYSFS_USB, help=argparse.SUPPRESS)
    parser.add_argument("--dev-root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.group < 0:
        parser.error("--interval must be above 0 and --group 0 or more")
    configure_logging("INFO", json_lines=os.environ.get("LOG_JSON", "false").lower() == "true")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "watching %s for USB Accelerators every %s s; their nodes go to group %d", args.sysfs, args.interval, args.group
    )
    Waker(args.group, args.sysfs, args.dev_root).run(args.interval, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
