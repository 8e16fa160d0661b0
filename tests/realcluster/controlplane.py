"""A real Kubernetes control plane on 127.0.0.1 for tests: etcd, kube-apiserver and, when present,
kube-controller-manager and kube-scheduler (the envtest convention, plus real controllers).

The binaries come from `KUBEBUILDER_ASSETS` (what `setup-envtest` prints in hosted CI), or from the folder that
`scripts/kube-assets.sh` fills (`.cache/kube-assets`, unpacked from checked builds; `make test` runs it). etcd may
also come from `PATH` (Debian's `etcd-server`). Nothing runs in a container: every process is a child of the test
run, listens on free loopback ports and is stopped at the end.

What is real: admission (CRD schema, defaults and CEL rules, ValidatingAdmissionPolicy, PodSecurity), RBAC,
the status subresource, watches, and with the controller manager and scheduler also Deployments, ReplicaSets,
garbage collection and scheduling of extended resources. No kubelet: `fake_nodes.py` plays the node side.

Used by the operator tests (tests/operator/conftest.py), the real-cluster tier (tests/realcluster/) and
`bench/bench_operator.py --real`. By hand: `python tests/realcluster/controlplane.py` starts one and prints an
`export KUBECONFIG=...` line; Ctrl-C stops it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSETS_ENV = "KUBEBUILDER_ASSETS"
LOCAL_ASSETS = ROOT / ".cache" / "kube-assets"
APISERVER, CONTROLLER_MANAGER, SCHEDULER, ETCD = "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"


class ControlPlaneUnavailable(RuntimeError):
    """The binaries are not on this machine: the real-cluster tier is skipped with this message."""


@dataclass(frozen=True)
class Assets:
    apiserver: Path
    etcd: Path
    controller_manager: Path | None
    scheduler: Path | None

    @property
    def full(self) -> bool:
        """With the controller manager and scheduler: real Deployments, ReplicaSets, GC and scheduling."""
        return self.controller_manager is not None and self.scheduler is not None


def find_assets() -> Assets:
    """The binaries, from KUBEBUILDER_ASSETS or .cache/kube-assets; raises ControlPlaneUnavailable saying why."""
    folders = [Path(p) for p in [os.environ.get(ASSETS_ENV, "")] if p] + [LOCAL_ASSETS]
    for folder in folders:
        apiserver = folder / APISERVER
        if not os.access(apiserver, os.X_OK):
            continue
        etcd = folder / ETCD if os.access(folder / ETCD, os.X_OK) else shutil.which(ETCD)
        if etcd is None:
            raise ControlPlaneUnavailable(f"{apiserver} is there but no etcd (in {folder} or on PATH)")
        optional = {n: folder / n if os.access(folder / n, os.X_OK) else None for n in (CONTROLLER_MANAGER, SCHEDULER)}
        return Assets(apiserver, Path(etcd), optional[CONTROLLER_MANAGER], optional[SCHEDULER])
    where = " or ".join(str(f) for f in folders)
    raise ControlPlaneUnavailable(
        f"no kube-apiserver in {where}: set {ASSETS_ENV} (setup-envtest) or run scripts/kube-assets.sh"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def generate_pki(folder: Path) -> None:
    """A CA, the API server's serving certificate (SAN 127.0.0.1) and the service-account key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30", "-subj", "/CN=korall-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.crt", cwd=folder,
    )  # fmt: skip
    (folder / "serving.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "serving.key", "-out", "serving.csr", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-sha256", "-days", "30", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-extfile", "serving.ext", "-out", "serving.crt", cwd=folder)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def kubeconfig(server: str, ca: Path, user: str, token: str) -> str:
    """A kubeconfig for one bearer token (YAML written by hand: JSON is valid YAML and needs no library)."""
    import json

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "korall-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "korall-test", "context": {"cluster": "korall-test", "user": user}}],
            "current-context": "korall-test",
        },
        indent=1,
    )


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ controller manager and scheduler when the assets have them) on loopback ports."""

    assets: Assets
    workdir: Path
    api_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tokens: dict[str, str] = field(
        default_factory=lambda: {CONTROLLER_MANAGER: secrets.token_hex(16), SCHEDULER: secrets.token_hex(16)}
    )
    _commands: dict[str, list[str]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (group system:masters)."""
        return self.workdir / "admin.kubeconfig"

    def start(self, timeout: float = 90.0) -> ControlPlane:
        """etcd and the API server, then the controllers (when the assets have them)."""
        self.start_core(timeout)
        self.start_controllers(timeout)
        return self

    def start_core(self, timeout: float = 90.0) -> ControlPlane:
        """etcd and the API server only: objects can be created, nothing acts on them yet."""
        pki = self.workdir / "pki"
        generate_pki(pki)
        (self.workdir / "logs").mkdir(exist_ok=True)
        (pki / "tokens.csv").write_text(
            f"{self.admin_token},admin,admin-uid,system:masters\n"
            f"{self._tokens[CONTROLLER_MANAGER]},system:kube-controller-manager,kcm-uid\n"
            f"{self._tokens[SCHEDULER]},system:kube-scheduler,scheduler-uid\n"
        )
        self.kubeconfig.write_text(kubeconfig(self.server, self.ca, "admin", self.admin_token))
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            ETCD,
            [str(self.assets.etcd), "--name", "korall-test", "--data-dir", str(self.workdir / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
             "--initial-cluster", f"korall-test=http://127.0.0.1:{etcd_peer}",
             "--unsafe-no-fsync"],
        )  # fmt: skip
        self._wait(f"http://127.0.0.1:{etcd_port}/health", ETCD, timeout)
        self._spawn(
            APISERVER,
            [str(self.assets.apiserver), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
             f"--tls-cert-file={pki}/serving.crt", f"--tls-private-key-file={pki}/serving.key",
             f"--client-ca-file={pki}/ca.crt", f"--token-auth-file={pki}/tokens.csv",
             "--authorization-mode=Node,RBAC", "--allow-privileged=true",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key",
             "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none", "--profiling=false"],
        )  # fmt: skip
        self.wait_ready(timeout)
        return self

    def start_controllers(self, timeout: float = 90.0) -> ControlPlane:
        """The controller manager and the scheduler, when the assets have them. Started after the CRDs are in,
        the garbage collector knows them from its first discovery (else only after its next, up to 30 s later)."""
        pki = self.workdir / "pki"
        if self.assets.controller_manager is not None and self.assets.scheduler is not None:
            for name, token in self._tokens.items():
                (self.workdir / f"{name}.kubeconfig").write_text(kubeconfig(self.server, self.ca, name, token))
            self._spawn(
                CONTROLLER_MANAGER,
                [str(self.assets.controller_manager), f"--kubeconfig={self.workdir}/{CONTROLLER_MANAGER}.kubeconfig",
                 "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                 f"--cert-dir={pki}/kcm", f"--service-account-private-key-file={pki}/sa.key",
                 f"--root-ca-file={pki}/ca.crt", "--use-service-account-credentials=true",
                 "--controllers=*,-node-lifecycle-controller", "--kube-api-qps=200", "--kube-api-burst=400"],
            )  # fmt: skip
            self._spawn(
                SCHEDULER,
                [str(self.assets.scheduler), f"--kubeconfig={self.workdir}/{SCHEDULER}.kubeconfig",
                 "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}"],
            )  # fmt: skip
            # The ServiceAccount admission plugin refuses pods until a namespace's `default` SA exists; the
            # controller manager creates it: waiting for it in `default` proves the controllers run.
            self._wait(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", CONTROLLER_MANAGER, timeout)
        return self

    def _spawn(self, name: str, command: list[str]) -> None:
        self._commands[name] = command
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self._processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    def _wait(self, url: str, name: str, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        deadline = time.monotonic() + timeout
        while True:
            process = self._processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {url} not ready after {timeout} s:\n{self.log_tail(name)}")
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 90.0) -> None:
        self._wait(f"{self.server}/readyz", APISERVER, timeout)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def restart_apiserver(self, down_for: float = 0.0) -> None:
        """Stop the API server (SIGTERM, as a rolling control-plane upgrade would) and start it again."""
        self._stop(APISERVER)
        time.sleep(down_for)
        self._spawn(APISERVER, self._commands[APISERVER])
        self.wait_ready()

    def _stop(self, name: str, grace: float = 15.0) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Controllers first, then the API server, then etcd."""
        for name in (SCHEDULER, CONTROLLER_MANAGER, APISERVER, ETCD):
            with contextlib.suppress(OSError):
                self._stop(name, grace=5.0)


def main() -> None:
    """Start a control plane by hand, print how to reach it, stop it on Ctrl-C."""
    try:
        assets = find_assets()
    except ControlPlaneUnavailable as e:
        sys.exit(str(e))
    workdir = Path(tempfile.mkdtemp(prefix="korall-kube-"))
    plane = ControlPlane(assets, workdir).start()
    print(f"export KUBECONFIG={plane.kubeconfig}   # logs in {workdir}/logs; Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
