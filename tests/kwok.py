"""A real Kubernetes v1.37 control plane with KWOK fake GPU nodes, for the tests.

kwokctl runs etcd, kube-apiserver, kube-controller-manager (the garbage collector),
kube-scheduler and the kwok controller as local processes from the binaries that
``make cluster-tools`` built (``hack/build-cluster-tools.sh``). KWOK stands in for the
kubelet only: it marks scheduled pods Running and Ready without running containers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gpupin import constants
from gpupin.inventory import NodeInventory
from gpupin.kube import ApiError, Kube, load_configuration

from faultproxy import FaultProxy
from helpers import node

T = TypeVar("T")
K8S_VERSION = "v1.37.2"


def tools_bin() -> Path:
    default = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "gpupin"
        / f"k8s-{K8S_VERSION}"
        / "bin"
    )
    return Path(os.environ.get("GPUPIN_TOOLS_BIN", default))


def missing_tools() -> list[str]:
    names = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
        "kwok",
        "kwokctl",
        "kubectl",
    ]
    return [n for n in names if not (tools_bin() / n).exists()]


def wait_for(
    check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll until ``check`` returns something truthy (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ApiError, KeyError, IndexError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@dataclass
class Cluster:
    name: str
    workdir: Path
    kubeconfig: Path
    kube: Kube = field(init=False)
    operator_kubeconfig: Path | None = None
    """A ServiceAccount token bound to exactly gpupin.controller.rbac.RULES (see least_privilege)."""

    def __post_init__(self) -> None:
        self.kube = Kube(_configuration(self.kubeconfig))

    # -- kubectl and raw REST --------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(tools_bin() / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", input=manifest)

    def get(self, path: str) -> Any:
        return self.kube.request("GET", path)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get(f"/apis/{constants.API_VERSION}/namespaces/{namespace}/{constants.PLURAL}/{name}")  # type: ignore[no-any-return]

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        items = self.kube.request("GET", f"/api/v1/namespaces/{namespace}/pods").get("items") or []
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.kube.request("GET", f"/api/v1/namespaces/{namespace}/events").get("items") or []
        return [
            e
            for e in items
            if e["involvedObject"].get("name") == name and e["involvedObject"]["kind"] == constants.KIND
        ]

    def condition(self, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
        body = self.deployment(namespace, name)
        for condition in (body.get("status") or {}).get("conditions") or []:
            if (
                condition["type"] == kind
                and (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"]
            ):
                return condition  # type: ignore[no-any-return]
        return None

    # -- fake GPU nodes ------------------------------------------------------------------------

    def add_node(
        self, inventory: NodeInventory, gpu_capacity: bool = False, annotate: bool = True, kwok: bool = True
    ) -> None:
        """A KWOK node; with ``annotate``, carrying the gpupin inventory annotation as the agent writes it
        (without, the real agent is expected to publish it). ``kwok=False``: a Ready node that no
        kubelet and no KWOK serve — its pods are scheduled and then left for the test to play the
        kubelet (write their status)."""
        capacity: dict[str, str] = {"cpu": "64", "memory": "512Gi", "pods": "110"}
        if gpu_capacity:
            capacity[constants.GPU_RESOURCE] = str(len(inventory.gpus))
        annotations = {"kwok.x-k8s.io/node": "fake"} if kwok else {}
        if annotate:
            annotations[constants.INVENTORY_ANNOTATION] = inventory.to_annotation()
        self.kube.request(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": inventory.name,
                    "annotations": annotations,
                    "labels": {"kubernetes.io/hostname": inventory.name, "type": "kwok"},
                },
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                },
            },
        )

    def set_inventory(self, inventory: NodeInventory) -> None:
        self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{inventory.name}",
            {"metadata": {"annotations": {constants.INVENTORY_ANNOTATION: inventory.to_annotation()}}},
            content_type="application/merge-patch+json",
        )

    def delete_node(self, name: str) -> None:
        try:
            self.kube.request("DELETE", f"/api/v1/nodes/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise

    def create_namespace(self, name: str) -> None:
        self.kube.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def delete_namespace(self, name: str) -> None:
        try:
            self.kube.request("DELETE", f"/api/v1/namespaces/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise


def _configuration(kubeconfig: Path) -> Any:
    return load_configuration(str(kubeconfig))


def start_cluster(
    workdir: Path,
    name: str,
    kubeconfig: Path | None = None,
    runtime: str = "binary",
    extra_args: tuple[str, ...] = (),
) -> Cluster:
    """kwokctl create cluster: the binary runtime runs the pinned binaries as local processes;
    ``kind`` (needs Docker) puts the control plane in a kind node instead. ``extra_args``:
    ``component=flag=value`` for kwokctl's ``--extra-args`` (e.g. a wider Service range:
    ``kube-apiserver=service-cluster-ip-range=10.0.0.0/16``; the default /24 holds 253 Services)."""
    tools = tools_bin()
    kubeconfig = kubeconfig or workdir / "kubeconfig"
    # kwokctl calls kubectl from PATH: make it the pinned v1.37 one, not whatever the host has
    env = {
        **os.environ,
        "KWOK_WORKDIR": str(workdir),
        "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        str(tools / "kwokctl"),
        "create",
        "cluster",
        "--name",
        name,
        "--runtime",
        runtime,
        "--kubeconfig",
        str(kubeconfig),
        "--wait",
        "120s",
        "--config",
        str(Path(__file__).resolve().parents[1] / "test" / "cluster" / "kwokctl.yaml"),
    ]
    if runtime == "binary":
        for component, binary in (
            ("kube-apiserver", "kube-apiserver"),
            ("kube-controller-manager", "kube-controller-manager"),
            ("kube-scheduler", "kube-scheduler"),
            ("etcd", "etcd"),
            ("kwok-controller", "kwok"),
        ):
            command += [f"--{component}-binary", str(tools / binary)]
    for arg in extra_args:
        command += ["--extra-args", arg]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"kwokctl create cluster failed:\n{result.stderr[-3000:]}")
    return Cluster(name=name, workdir=workdir, kubeconfig=kubeconfig)


def stop_cluster(cluster: Cluster) -> None:
    env = {
        **os.environ,
        "KWOK_WORKDIR": str(cluster.workdir),
        "PATH": f"{tools_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    subprocess.run(
        [str(tools_bin() / "kwokctl"), "delete", "cluster", "--name", cluster.name],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )


class Operator:
    """``gpupin operator`` as a user runs it: a separate process, stopped with a signal."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.args = args
        self.environment = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpupin",
                "operator",
                "--metrics-port",
                "0",
                "--health-port",
                "0",
                "--runtime-class",
                "",
                "--log-format",
                "json",
                "--log-level",
                os.environ.get("GPUPIN_TEST_LOG_LEVEL", "INFO"),
                *self.args,
            ],
            env=self.environment,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no cleanup, no goodbye."""
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


FORBIDDEN = re.compile(r'status"?\s*[:=]\s*403\b|Not enough permissions|\bis forbidden\b')
"""A refusal by RBAC in an operator's log: gpupin logs ``"status": 403``, kopf ``status=403`` and
"Not enough permissions to …", the API server "… is forbidden: User …"."""


class Env:
    """One test's corner of the shared cluster: a namespace, its own nodes, operators, proxies;
    all removed afterwards (deployments first, so the next test's operator never sees them)."""

    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp_path
        self.namespace = f"t-{uuid.uuid4().hex[:8]}"
        self.suffix = uuid.uuid4().hex[:5]
        self.nodes: list[str] = []
        self.operators: list[Operator] = []
        self.proxies: list[FaultProxy] = []
        cluster.create_namespace(self.namespace)

    def node(self, name: str, *products: tuple[str, str, str], kwok: bool = True) -> NodeInventory:
        inventory = node(f"{name}-{self.suffix}", *products)
        self.cluster.add_node(inventory, kwok=kwok)
        self.nodes.append(inventory.name)
        return inventory

    def operator(
        self, *args: str, kubeconfig: Path | None = None, environment: dict[str, str] | None = None
    ) -> Operator:
        """`gpupin operator` on the least-privilege ServiceAccount token unless told otherwise;
        ``environment``: more variables (the chart's GPUPIN_* settings)."""
        if "--lease-namespace" not in args:  # each test's operators contend only with each other
            args = ("--lease-namespace", self.namespace, *args)
        op = Operator(
            kubeconfig or self.cluster.operator_kubeconfig or self.cluster.kubeconfig,
            self.tmp / f"operator-{len(self.operators)}.log",
            *args,
            env=environment,
        )
        self.operators.append(op.start())
        return op

    def proxy(self) -> FaultProxy:
        proxy = FaultProxy(self.cluster.operator_kubeconfig or self.cluster.kubeconfig).start()
        self.proxies.append(proxy)
        return proxy

    def apply(self, name: str, **spec: Any) -> None:
        self.cluster.apply(
            json.dumps(
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "metadata": {"name": name, "namespace": self.namespace},
                    "spec": spec,
                }
            )
        )

    def delete(self, name: str) -> None:
        self.cluster.kubectl("delete", "llmd", name, "-n", self.namespace, "--wait=false")

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.pods(self.namespace)

    def placed(self, name: str, status: str = "True") -> Callable[[], dict[str, Any] | None]:
        return self.condition_is(name, "Placed", status)

    def condition_is(self, name: str, kind: str, status: str = "True") -> Callable[[], dict[str, Any] | None]:
        """For wait_for: deployment ``name``'s condition ``kind`` once it has ``status``."""

        def check() -> dict[str, Any] | None:
            condition = self.cluster.condition(self.namespace, name, kind)
            return condition if condition and condition["status"] == status else None

        return check

    def close(self) -> None:
        logs = "\n".join(op.tail() for op in self.operators)
        for op in self.operators:
            op.stop()
        for proxy in self.proxies:
            proxy.stop()
        # deployments first, so that the next test's operator does not find them still there
        self.cluster.kubectl("delete", "llmd", "--all", "-n", self.namespace, "--wait=true", check=False)
        self.cluster.delete_namespace(self.namespace)
        for name in self.nodes:
            self.cluster.delete_node(name)
        self.logs = logs
        forbidden = [
            line
            for op in self.operators
            if op.log.exists()
            for line in op.log.read_text(errors="replace").splitlines()
            if FORBIDDEN.search(line)
        ]
        assert not forbidden, f"the operator's RBAC refused a request it needed: {forbidden[:3]}"


def resource_slice(inventory: NodeInventory) -> dict[str, Any]:
    """A node's GPUs as the NVIDIA DRA driver's ResourceSlice (driver gpu.nvidia.com, devices gpu-<minor>)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{inventory.name}-gpu.nvidia.com"},
        "spec": {
            "driver": constants.DRA_DRIVER,
            "nodeName": inventory.name,
            "pool": {"name": inventory.name, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": f"gpu-{g.index}",
                    "attributes": {
                        "type": {"string": "gpu"},
                        "uuid": {"string": g.uuid},
                        "productName": {"string": g.name},
                        "cudaComputeCapability": {"version": f"{g.compute_capability}.0"},
                    },
                    "capacity": {"memory": {"value": str(g.memory)}},
                }
                for g in inventory.gpus
            ],
        },
    }


def token_kubeconfig(
    cluster: Cluster, namespace: str, account: str, path: Path, bound_pod: dict[str, Any] | None = None
) -> Path:
    """A kubeconfig with nothing but a token of a ServiceAccount (no client certificate): whatever
    its RBAC does not allow fails. ``bound_pod``: the token is bound to that pod, as the kubelet binds
    a pod's projected token — the API server then names the pod's node in the token's user info
    (``authentication.kubernetes.io/node-name``)."""
    import base64

    import yaml

    token = cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 86400,
                **(
                    {
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": bound_pod["metadata"]["name"],
                            "uid": bound_pod["metadata"]["uid"],
                        }
                    }
                    if bound_pod
                    else {}
                ),
            },
        },
    )["status"]["token"]
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    ca = (
        server.get("certificate-authority-data")
        or base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
    )
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": account,
                "clusters": [
                    {
                        "name": "cluster",
                        "cluster": {"server": server["server"], "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": {"cluster": "cluster", "user": account}}],
            }
        )
    )
    return path


def grant(cluster: Cluster, namespace: str, account: str, name: str, rules: list[dict[str, Any]]) -> None:
    """ServiceAccount ``namespace/account`` bound cluster-wide to exactly ``rules`` (ClusterRole and
    ClusterRoleBinding ``name``; :func:`revoke` removes them)."""
    from gpupin.controller import rbac

    cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
    )
    cluster.kube.request(
        "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", rbac.cluster_role(name, rules)
    )
    cluster.kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def revoke(cluster: Cluster, name: str) -> None:
    cluster.kube.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
    cluster.kube.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")


def least_privilege(cluster: Cluster, namespace: str = "gpupin-test") -> Path:
    """A ServiceAccount bound to exactly the operator's RBAC rules, and a token-only kubeconfig for it:
    every operator in the tests runs on it, so a request the rules do not allow fails the suite."""
    from gpupin.controller import rbac

    cluster.create_namespace(namespace)
    grant(cluster, namespace, "gpupin-operator", "gpupin-operator-test", rbac.RULES)
    return token_kubeconfig(cluster, namespace, "gpupin-operator", cluster.workdir / "operator.kubeconfig")
