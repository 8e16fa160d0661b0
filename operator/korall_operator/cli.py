"""`kubectl korall`: the model catalog from the command line (a kubectl plugin: the console script kubectl-korall).

    kubectl korall catalog [-n NS | -A]          every InferenceModel: stage, model, validation, approval, serving
    kubectl korall approve IM [-n NS] [--sha256 HEX] [--comment TEXT]
                                                 approve the model IM asks for (a ModelApproval, as yourself)
    kubectl korall history IM [-n NS]            what happened to IM's models (status.history)

Global options: --kubeconfig FILE, --as USER (impersonate, as kubectl does). Credentials come from the kubeconfig, as
kubectl's (the operator's own client, k8s.py). `approve` names you as the API server knows you (a SelfSubjectReview,
or the --as user): the chart's admission policy refuses any other name. Exit 0, or 1 with the API server's words.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from korall_contract import API_GROUP, API_VERSION

from korall_operator.k8s import ApiError, KubeClient, login, resource_path

API = f"{API_GROUP}/{API_VERSION}"


class PluginClient(KubeClient):
    """The operator's client, with impersonation and the few reads the plugin needs."""

    impersonate: str | None = None

    def _headers(self) -> dict[str, str]:
        headers = super()._headers()
        if self.impersonate:
            headers["Impersonate-User"] = self.impersonate
        return headers

    async def list_items(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return list((await self._call("GET", resource_path(API, plural, namespace))).get("items") or [])

    async def whoami(self) -> str:
        """The user name the API server authenticates these credentials as."""
        if self.impersonate:
            return self.impersonate
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        path = resource_path("authentication.k8s.io/v1", "selfsubjectreviews", None)
        answer = await self._call("POST", path, body=review)
        return str(((answer.get("status") or {}).get("userInfo") or {}).get("username") or "")


def _age(created: str | None, now: datetime.datetime) -> str:
    if not created:
        return "-"
    then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def catalog_rows(models: list[dict[str, Any]], all_namespaces: bool, now: datetime.datetime) -> list[list[str]]:
    head = ["NAME", "STAGE", "SHA", "VALIDATED", "APPROVED", "SERVING", "READY", "PROMOTED", "AGE"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + head]
    for m in sorted(models, key=lambda m: (m["metadata"].get("namespace", ""), m["metadata"]["name"])):
        status, meta = m.get("status") or {}, m["metadata"]
        cat = status.get("catalog") or {}
        row = [
            meta["name"],
            (m.get("spec") or {}).get("stage", "test"),
            cat.get("shortSha", "-"),
            cat.get("validated", "-"),
            cat.get("approved", "-"),
            status.get("activeShortSha", "-"),
            _condition(m, "Ready").get("status", "-"),
            _condition(m, "Promoted").get("reason", "-"),
            _age(meta.get("creationTimestamp"), now),
        ]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + row)
    return rows


def history_rows(model: dict[str, Any]) -> list[list[str]]:
    rows = [["TIME", "EVENT", "SHA", "STAGE", "VALIDATION", "APPROVED BY", "SOURCE", "MESSAGE"]]
    for e in (model.get("status") or {}).get("history") or []:
        rows.append([e.get("time", ""), e.get("event", ""), str(e.get("sha256", ""))[:12], e.get("stage") or "-",
                     e.get("validation") or "-", e.get("approvedBy") or "-", e.get("source") or "-",
                     str(e.get("message") or "")[:100]])  # fmt: skip
    return rows


async def _run(args: argparse.Namespace) -> str:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    info = login()
    client = PluginClient(info)
    client.impersonate = args.as_user
    namespace = args.namespace or info.default_namespace or "default"
    try:
        if args.command == "catalog":
            models = await client.list_items("inferencemodels", None if args.all_namespaces else namespace)
            if not models:
                return "No InferenceModels found."
            return table(catalog_rows(models, args.all_namespaces, datetime.datetime.now(tz=datetime.UTC)))
        model = await client.get(API, "inferencemodels", namespace, args.model)
        if model is None:
            raise SystemExit(f"error: no InferenceModel {args.model!r} in namespace {namespace!r}")
        if args.command == "history":
            rows = history_rows(model)
            return table(rows) if len(rows) > 1 else f"No history yet for {namespace}/{args.model}."
        return await _approve(client, model, namespace, args)
    finally:
        await client.close()


async def _approve(client: PluginClient, model: dict[str, Any], namespace: str, args: argparse.Namespace) -> str:
    catalog = (model.get("status") or {}).get("catalog") or {}
    sha = args.sha256 or catalog.get("sha256")
    if not sha:
        raise SystemExit(f"error: the operator has not recorded the model of {args.model} yet; pass --sha256")
    user = await client.whoami()
    if not user:
        raise SystemExit("error: the API server did not say who you are; pass --as USER")
    name = model["metadata"]["name"]
    spec = {"inferenceModel": name, "sha256": sha, "approvedBy": user}
    if args.comment:
        spec["comment"] = args.comment
    body = {"apiVersion": API, "kind": "ModelApproval", "metadata": {"generateName": f"{name[:40]}-{sha[:8]}-"},
            "spec": spec}  # fmt: skip
    created = await client.create(API, "modelapprovals", namespace, body)
    note = ""
    if sha == catalog.get("sha256") and catalog.get("validated") not in ("Passed", "NotRequired"):
        note = f" (its validation is {catalog.get('validated', 'unknown')}: it serves only once that passed)"
    return f"modelapproval/{created['metadata']['name']} created: {user} approved model {sha[:12]} of {name}{note}"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl korall", description="korall's model catalog (docs/catalog.md)")
    top.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    top.add_argument("--as", dest="as_user", metavar="USER", help="act as USER (impersonation)")
    commands = top.add_subparsers(dest="command", required=True)
    catalog = commands.add_parser("catalog", help="every InferenceModel as the catalog sees it")
    catalog.add_argument("-n", "--namespace")
    catalog.add_argument("-A", "--all-namespaces", action="store_true")
    for command, what in (("approve", "approve the model IM asks for"), ("history", "the history of IM's models")):
        sub = commands.add_parser(command, help=what)
        sub.add_argument("model", metavar="IM", help="the InferenceModel")
        sub.add_argument("-n", "--namespace")
        if command == "approve":
            sub.add_argument("--sha256", help="the model to approve (default: the one IM asks for now)")
            sub.add_argument("--comment", help="why, or what was checked")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(asyncio.run(_run(args)))
    except ApiError as e:
        try:
            message = json.loads(e.body).get("message") or str(e)
        except (TypeError, ValueError, AttributeError):
            message = str(e)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
