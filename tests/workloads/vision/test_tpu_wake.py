"""The TPU waker (korall_workloads.vision.tpu_wake) over a sysfs and a /dev laid out in a temporary folder.

Mocked, because it cannot exist here: the USB Accelerator. Its sysfs folder and device node are files, and the
one call that would load its firmware is replaced by what the hardware then does (the same port comes back with
the application id under a new device number). The real libedgetpu path is exercised where it can be: this machine
has no libedgetpu, and the waker must say so and keep going.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from korall_workloads.vision.tpu_wake import Waker, accelerators, main


def plug(sysfs: Path, dev: Path, port: str, ident: tuple[str, str], bus: int, device: int) -> Path:
    folder = sysfs / port
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "idVendor").write_text(f"{ident[0]}\n")
    (folder / "idProduct").write_text(f"{ident[1]}\n")
    (folder / "busnum").write_text(f"{bus}\n")
    (folder / "devnum").write_text(f"{device}\n")
    node = dev / "dev" / "bus" / "usb" / f"{bus:03d}" / f"{device:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_text("")
    node.chmod(0o644)  # a USB node without Coral's udev rule: root's, read-only for everyone else
    return node


@pytest.fixture
def bus(tmp_path: Path) -> tuple[Path, Path]:
    sysfs, dev = tmp_path / "sys", tmp_path / "root"
    (sysfs / "usb1").mkdir(parents=True)  # a root hub: no ids of its own here
    (sysfs / "1-1:1.0").mkdir()  # an interface folder
    plug(sysfs, dev, "1-2", ("046d", "0825"), 1, 2)  # a webcam: not ours
    return sysfs, dev


def test_only_accelerators_are_found_booting_or_awake(bus: tuple[Path, Path]) -> None:
    sysfs, dev = bus
    plug(sysfs, dev, "2-1", ("1a6e", "089a"), 2, 5)
    plug(sysfs, dev, "3-1", ("18d1", "9302"), 3, 7)
    found = accelerators(sysfs)
    assert [(a.port, a.booting, str(a.node(dev))) for a in found] == [
        ("2-1", True, f"{dev}/dev/bus/usb/002/005"),
        ("3-1", False, f"{dev}/dev/bus/usb/003/007"),
    ]


def test_a_booting_accelerator_is_woken_and_its_new_node_given_to_the_group(
    bus: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sysfs, dev = bus
    old = plug(sysfs, dev, "2-1", ("1a6e", "089a"), 2, 5)
    webcam = dev / "dev" / "bus" / "usb" / "001" / "002"
    opened: list[str] = []

    def load_firmware() -> None:  # what the accelerator does when libedgetpu opens it
        opened.append("usb:0")
        old.unlink()
        plug(sysfs, dev, "2-1", ("18d1", "9302"), 2, 6)

    group = os.getgid()
    waker = Waker(group, sysfs, dev, load_firmware)
    with caplog.at_level(logging.INFO, "korall.tpu_wake"):
        assert waker.round() is True
    new = dev / "dev" / "bus" / "usb" / "002" / "006"
    assert opened == ["usb:0"]
    assert stat.S_IMODE(new.stat().st_mode) == 0o664 and new.stat().st_gid == group  # group read-write
    assert stat.S_IMODE(webcam.stat().st_mode) == 0o644  # not ours: untouched
    assert "loaded the firmware of the accelerator at 2-1" in caplog.text
    # awake now: a second round opens nothing and changes nothing
    caplog.clear()
    with caplog.at_level(logging.INFO, "korall.tpu_wake"):
        assert waker.round() is True
    assert opened == ["usb:0"] and not caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root, as the DaemonSet has")
def test_the_node_goes_to_the_configured_group(bus: tuple[Path, Path]) -> None:
    sysfs, dev = bus
    node = plug(sysfs, dev, "2-1", ("18d1", "9302"), 2, 9)
    assert Waker(4646, sysfs, dev, lambda: None).round() is True
    assert node.stat().st_gid == 4646


def test_without_libedgetpu_the_waker_says_why_and_keeps_the_node_usable(
    bus: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The real runtime call: there is no libedgetpu on this machine (the vision image has it)."""
    sysfs, dev = bus
    node = plug(sysfs, dev, "2-1", ("1a6e", "089a"), 2, 5)
    with caplog.at_level(logging.WARNING, "korall.tpu_wake"):
        assert Waker(os.getgid(), sysfs, dev).round() is False
    assert "could not load the firmware of the accelerator at 2-1" in caplog.text
    assert "libedgetpu.so.1 is not installed" in caplog.text
    assert stat.S_IMODE(node.stat().st_mode) == 0o664


def test_a_node_gone_while_re_enumerating_is_tried_again(bus: tuple[Path, Path]) -> None:
    sysfs, dev = bus
    plug(sysfs, dev, "2-1", ("18d1", "9302"), 2, 6).unlink()
    assert Waker(os.getgid(), sysfs, dev, lambda: None).round() is False


def test_the_loop_backs_off_while_failing_and_stops_on_request(bus: tuple[Path, Path]) -> None:
    sysfs, dev = bus
    plug(sysfs, dev, "2-1", ("1a6e", "089a"), 2, 5)
    calls: list[float] = []
    stop = threading.Event()

    def failing() -> None:
        calls.append(0)
        if len(calls) == 3:
            stop.set()
        raise RuntimeError("Failed to load delegate from libedgetpu.so.1")

    Waker(os.getgid(), sysfs, dev, failing).run(0.01, stop)
    assert len(calls) == 3


@pytest.mark.parametrize("args", [["--group", "-1"], ["--group", "46", "--interval", "0"], []])
def test_bad_arguments_stop_it_with_a_usage_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "usage: python -m korall_workloads.vision.tpu_wake" in capsys.readouterr().err
