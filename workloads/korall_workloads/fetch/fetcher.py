"""One model download from start to end: cache hit, lock, attempts with capped backoff, verify, publish.

cached and verified?  -> done, no request            (a published file is complete: re-hash it only)
take the model's lock    (another pod on the node may be downloading it: wait, then it is a cache hit)
collect                  (make room: the models used least recently go while the cache is over its budget)
resume the partial file  (hash the bytes an interrupted run left; continue with Range from there)
attempt, back off, attempt ... until the body is complete or a failure no retry can fix
sha256 matches?       -> fsync, rename into place    else: delete the partial, ChecksumMismatch
mark it used, collect    (the model stays for MODEL_CACHE_KEEP_S at least: its pod starts in the meantime)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from korall_contract import MODEL_FETCHED, FetchEnv

from .cache import ModelCache, hash_stream
from .failures import FetchFailure, Reason, redact
from .partial import Partial
from .settings import FetchSettings
from .source import read_headers, read_link
from .transfer import Transient, download

log = logging.getLogger(__name__)

# Failures after which the partial file is worthless (or in the way) and is deleted.
_DISCARD_PARTIAL = {Reason.DISK_FULL, Reason.SIZE_LIMIT_EXCEEDED, Reason.CHECKSUM_MISMATCH}


@dataclass(frozen=True)
class Outcome:
    """A model that is in the cache and verified."""

    path: Path
    sha256: str
    size: int
    cache_hit: bool
    requests: int
    seconds: float

    def summary(self) -> str:
        if self.cache_hit:
            how = "cache hit, no request"
        else:
            how = f"downloaded in {self.seconds:.1f} s, {self.requests} requests"
        return f"{MODEL_FETCHED}: sha256:{self.sha256} {self.size} bytes at {self.path} ({how})"


def backoff_s(failures: int, settings: FetchSettings) -> float:
    """Capped exponential delay before the next attempt, with jitter so pods that failed together spread out."""
    delay = min(settings.backoff_max_s, settings.backoff_min_s * 2 ** min(failures - 1, 30))
    return delay * random.uniform(0.5, 1.0)


def _verified_hit(cache: ModelCache, digest: str, started: float) -> Outcome | None:
    actual = cache.cached_digest(digest)
    if actual is None:
        return None
    if actual != digest:
        log.warning("the cached model sha256:%s hashes to %s (corrupt); downloading it again", digest, actual)
        return None
    path = cache.model(digest)
    return Outcome(path, digest, path.stat().st_size, True, 0, time.monotonic() - started)


def fetch(settings: FetchSettings, *, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Make the model `settings.sha256` present and verified in the cache; raise FetchFailure if it cannot be."""
    started = time.monotonic()
    digest = settings.sha256
    cache = ModelCache(settings.cache_dir)
    cache.prepare()
    # A shared lock while a cached copy is verified and marked: no collection removes it meanwhile.
    with cache.locked(digest, settings.lock_timeout_s, shared=True):
        if hit := _verified_hit(cache, digest, started):
            cache.mark_used(digest)
    if hit is None:
        hit = _fetch_locked(settings, cache, sleep, started)
    collect(cache, settings)
    return hit


def collect(cache: ModelCache, settings: FetchSettings) -> None:
    """Bring the cache back within MODEL_CACHE_MAX_BYTES (0: unbounded); never fails the download."""
    if not settings.cache_max_bytes:
        return
    try:
        removed = cache.collect(settings.sha256, settings.cache_max_bytes, settings.cache_keep_s)
    except OSError as exc:
        log.warning("the model cache was not collected: %s", exc.strerror or exc)
        return
    for r in removed:
        log.info("removed %s (%d bytes, unused for %.1f h) from the model cache: over MODEL_CACHE_MAX_BYTES",
                 r.name, r.size, r.idle_s / 3600)  # fmt: skip


def _fetch_locked(
    settings: FetchSettings, cache: ModelCache, sleep: Callable[[float], None], started: float
) -> Outcome:
    """Download under the model's exclusive lock (or find that another process just did)."""
    digest = settings.sha256
    with cache.locked(digest, settings.lock_timeout_s):
        if hit := _verified_hit(cache, digest, started):  # another process finished while we waited
            cache.mark_used(digest)
            return hit
        collect(cache, settings)  # room first: a full disk would refuse the download
        cache.discard(cache.model(digest))  # a corrupt copy, if any
        with cache.open_partial(digest) as f:
            hasher, size = hash_stream(f)
            partial = Partial(f, hasher, size, resumed_from_earlier_run=size > 0)
            try:
                requests = _download(settings, cache, partial, sleep)
            except FetchFailure as exc:
                if exc.reason in _DISCARD_PARTIAL:
                    cache.discard(cache.partial(digest))
                raise
            finally:
                partial.close()
            path = cache.publish(f, digest)
        cache.mark_used(digest)
    return Outcome(path, digest, partial.size, False, requests, time.monotonic() - started)


def _download(settings: FetchSettings, cache: ModelCache, partial: Partial, sleep: Callable[[float], None]) -> int:
    """Attempt until `partial` holds the verified model; return the number of requests made."""
    digest = settings.sha256
    if partial.size > settings.max_bytes:
        partial.restart()
    if partial.size:
        if partial.hexdigest() == digest:  # an earlier run died between the last byte and the rename
            log.info("the partial file of sha256:%s is complete and verified", digest)
            return 0
        log.info("resuming sha256:%s after the %d bytes an earlier run left", digest, partial.size)
    requests = 0
    failures = 0
    while True:
        url = read_link(settings)  # every attempt: the operator may have written a fresh link meanwhile
        headers = read_headers(settings)
        before = partial.size
        requests += 1
        try:
            download(
                url,
                headers,
                partial,
                max_bytes=settings.max_bytes,
                timeout_s=settings.timeout_s,
                free_bytes_dir=str(cache.dir),
            )
        except Transient as exc:
            failures = 1 if partial.size > before else failures + 1  # progress resets the count
            if failures >= settings.attempts:
                raise FetchFailure(
                    Reason.NETWORK_ERROR, f"{exc} (gave up after {failures} attempts without progress)"
                ) from None
            delay = backoff_s(failures, settings)
            log.warning("attempt %d: %s; retrying in %.1f s from byte %d", requests, exc, delay, partial.size)
            sleep(delay)
            continue
        except FetchFailure as exc:
            if exc.reason in (Reason.LINK_EXPIRED, Reason.ACCESS_DENIED) and _link_renewed(settings, url):
                failures += 1
                if failures < settings.attempts:
                    log.warning("attempt %d: %s; the link file has a new link, trying it", requests, exc.message)
                    continue
            raise
        actual = partial.hexdigest()
        if actual == digest:
            return requests
        if partial.resumed_from_earlier_run:  # e.g. a tail of zeros after a power cut: start over once
            log.warning("bytes left by an earlier run failed the sha256 check; downloading once more from the start")
            partial.restart()
            continue
        raise FetchFailure(
            Reason.CHECKSUM_MISMATCH,
            f"{redact(url)} gave {partial.size} bytes with sha256 {actual}, but {FetchEnv.MODEL_SHA256} is "
            f"{digest}; nothing was kept in the cache",
        )


def _link_renewed(settings: FetchSettings, used: str) -> bool:
    """Whether the link file now holds another link than the one just refused (the operator re-signed)."""
    if settings.url_file is None:
        return False
    try:
        return read_link(settings) != used
    except FetchFailure:
        return False
