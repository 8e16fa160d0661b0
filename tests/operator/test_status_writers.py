"""The per-parent write lock of the operator's status writers (handlers/_status_writes.py), in plain asyncio."""

from __future__ import annotations

import asyncio

from korall_operator.handlers._status_writes import StatusWriters


async def test_a_lock_handed_to_a_waiter_is_not_dropped_under_it() -> None:
    """A releases while B waits; C arrives before B has run. B and C must still write one after the other: a lock
    released to a waiter reads unlocked until that waiter runs, and must not be dropped and made anew then."""
    writers = StatusWriters()
    inside, most, order = 0, 0, []
    later: list[asyncio.Task[None]] = []

    async def write(name: str) -> None:
        nonlocal inside, most
        async with writers.exclusive("parent"):
            inside += 1
            most = max(most, inside)
            order.append(name)
            await asyncio.sleep(0.02)
            inside -= 1

    async def first() -> None:
        await write("a")
        later.append(asyncio.create_task(write("c")))  # at once, before the woken B has run

    a = asyncio.create_task(first())
    await asyncio.sleep(0.005)
    b = asyncio.create_task(write("b"))
    await asyncio.gather(a, b)
    await asyncio.gather(*later)
    assert most == 1 and sorted(order) == ["a", "b", "c"], order
    assert not writers._locks and not writers._users  # nothing kept once every writer is done


async def test_follow_ups_of_one_parent_coalesce_while_one_waits() -> None:
    writers = StatusWriters()
    ran: list[int] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with writers.exclusive("parent"):
            await release.wait()

    async def write(n: int) -> None:
        ran.append(n)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    follow_ups = [asyncio.create_task(writers.follow_up("parent", lambda n=n: write(n))) for n in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(holder, *follow_ups)
    assert ran == [0]  # the first one queued ran, after the holder; the other four found it waiting
