"""`python -m korall_operator`: run the operator (the same as `kopf run --standalone -m korall_operator.handlers`).

One replica, `--standalone` (no kopf peering): the Deployment in the chart runs one pod with the `Recreate`
strategy, so two operators never overlap. Every handler is idempotent (server-side apply), so a restart resumes
safely; the cost is a short gap in reconciliation while the pod restarts. See docs/operator-runtime.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from korall_operator import handlers
from korall_operator.handlers._common import load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m korall_operator", description=__doc__)
    parser.add_argument("--liveness", default="", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    korall = load_settings()
    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    namespaces = [korall.watch_namespace] if korall.watch_namespace else []
    assert handlers.__all__  # importing the package registered the handlers
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness or None,
        )
    )


if __name__ == "__main__":
    main()
