"""The kind tier: gpupin's chart and images in a real kind cluster, with a real kubelet,
containerd and the real Ollama server in its pods.

The cluster comes from ``hack/kind-up.sh`` (``make kind``): built from local sources here, or a
stock kind where Docker can pull. Its one node gets a fake GPU inventory (the agent in fake
mode: the seed's RTX 4070 + RTX 2060), so placement is gpupin's and serving is Ollama's on the
CPU (``operator.requireGPU=false``).

Stand-ins, said here once: no model registry is assumed reachable, so the model the real
Ollama pod serves is pre-seeded on a volume (a hostPath PersistentVolume the pod mounts
through ``storage.existingClaim``), created there by the real Ollama image itself
(``ollama create`` from a tiny GGUF written by the test). gpupin's pull init container then
gets no copy from the registry (unreachable offline; it has no such model online) and keeps
the cached one, as it does on an offline cluster with a pre-filled volume.
The vLLM pod cannot run here (no GPU; offline, no image): its spec is checked, not its run.

The tests run in order and share one release: install, the seed's deployments, a served
model, restarts, a deleted pod, ``helm upgrade`` with the operator replaced mid-way, and
``helm uninstall`` last.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupin import constants
from gpupin.engines import ollama

from helpers import EXAMPLES
from kwok import Cluster, tools_bin, wait_for
from ollama_server import write_tiny_gguf

pytestmark = [pytest.mark.kind, pytest.mark.timeout(600)]

RELEASE, SYSTEM = "gpupin", "gpupin-system"
SEED, SERVE = "gpupin-kind-seed", "gpupin-kind-serve"
MODELS_DIR = "/var/lib/gpupin-kind/models"  # on the kind node
CHART = Path(__file__).resolve().parents[2] / "charts" / "gpupin"
UUID_4070 = "GPU-4070aaaa-0000-4000-8000-000000000000"
UUID_2060 = "GPU-2060bbbb-0000-4000-8000-000000000001"
TINY = [{"name": "gpupin-tiny", "vram": "1Gi"}, {"name": "gpupin-tiny-embed", "vram": "1Gi"}]


class Kind:
    """The kind cluster of this run and the commands the tests use on it."""

    def __init__(self, cluster: Cluster, image: str, mode: str) -> None:
        self.cluster = cluster
        self.image = image
        self.mode = mode
        """offline (no registry reachable) or stock (hack/kind-up.sh)."""
        self.node = cluster.get("/api/v1/nodes")["items"][0]["metadata"]["name"]
        self.ollama_image = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["ollamaImage"]

    @property
    def kubectl(self) -> Any:
        return self.cluster.kubectl

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(tools_bin() / "helm"), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
        return result

    def values(self, **extra: Any) -> Path:
        repository, _, tag = self.image.rpartition(":")
        values: dict[str, Any] = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "operator": {"runtimeClassName": "", "requireGPU": False, "logLevel": "DEBUG", **extra},
            "agent": {
                "intervalSeconds": 10,
                "fakeInventory": {
                    "enabled": True,
                    "inventory": {
                        "nodes": [
                            {
                                "name": self.node,
                                "gpus": [
                                    {
                                        "index": 0,
                                        "uuid": UUID_4070,
                                        "name": "NVIDIA GeForce RTX 4070",
                                        "memory": "12282Mi",
                                        "computeCapability": "8.9",
                                    },
                                    {
                                        "index": 1,
                                        "uuid": UUID_2060,
                                        "name": "NVIDIA GeForce RTX 2060",
                                        "memory": "6144Mi",
                                        "computeCapability": "7.5",
                                    },
                                ],
                            }
                        ]
                    },
                },
            },
        }
        path = self.cluster.workdir / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        if not extra:  # beside the kubeconfig: to install gpupin again after the tier (README)
            (self.cluster.kubeconfig.parent / "values.yaml").write_text(yaml.safe_dump(values))
        return path

    def install(self, **operator: Any) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace",
            "-f", str(self.values(**operator)), "--wait", "--timeout", "4m",
        )  # fmt: skip

    def reset(self) -> None:
        """Whatever an earlier run left: the release, the test namespaces, the CRD (helm keeps
        it), the model volume's PersistentVolume."""
        self.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--ignore-not-found", check=False)
        for args in (
            ["namespace", SEED, SERVE],
            ["crd", f"{constants.PLURAL}.{constants.GROUP}"],
            ["pv", "gpupin-kind-models"],
        ):
            subprocess.run(  # namespaces with pods take longer than Cluster.kubectl waits
                [str(tools_bin() / "kubectl"), "--kubeconfig", str(self.cluster.kubeconfig), "delete",
                 *args, "--ignore-not-found", "--wait", "--timeout=180s"],
                check=True, capture_output=True, timeout=200,
            )  # fmt: skip

    def operator_pods(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.cluster.pods(SYSTEM)
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
        ]

    def logs(self, namespace: str, pod: str, container: str | None = None, tail: int = 60) -> str:
        args = ["logs", "-n", namespace, pod, f"--tail={tail}"] + (["-c", container] if container else [])
        result = self.kubectl(*args, check=False)
        return result.stdout + result.stderr

    def ready(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cluster.condition(namespace, name, "Ready")

    def run_pod(self, namespace: str, name: str, spec: dict[str, Any], timeout: float = 120) -> str:
        """Run a pod to completion on the node; its log. Fails with the log when it fails."""
        self.kubectl("delete", "pod", "-n", namespace, name, "--ignore-not-found", "--wait")
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}}
        body["spec"] = {"restartPolicy": "Never", "nodeName": self.node, **spec}
        self.cluster.apply(json.dumps(body))
        phase = wait_for(
            lambda: (
                (p := self.cluster.get(f"/api/v1/namespaces/{namespace}/pods/{name}")["status"].get("phase"))
                in ("Succeeded", "Failed")
                and p
            ),
            timeout=timeout,
            interval=0.5,
            what=f"pod {name} to finish",
        )
        log = self.logs(namespace, name, tail=200)
        assert phase == "Succeeded", f"pod {name} failed:\n{log}"
        return log


class ReadyWatch:
    """Every Ready status an LLMDeployment passes through, read every 0.2 s in a thread (the
    kubelet keeps a restarted pod unready for seconds, so none is missed); equal statuses in a
    row are merged. (`kubectl get -w` is no help here: it holds its output back on a pipe.)"""

    def __init__(self, kind: Kind, namespace: str, name: str) -> None:
        self.kind, self.namespace, self.name = kind, namespace, name
        self.seen: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            try:
                condition = self.kind.ready(self.namespace, self.name)
            except Exception:  # a failed read is a missed sample, not a failure
                continue
            if condition:
                status = (condition["status"], condition["reason"], condition["message"])
                if not self.seen or self.seen[-1][0] != status[0]:
                    self.seen.append(status)

    @property
    def statuses(self) -> list[str]:
        return [s[0] for s in self.seen]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kind]:
    kubeconfig = os.environ.get("GPUPIN_KIND_KUBECONFIG")
    if not kubeconfig:
        pytest.skip("the kind tier runs in `make kind` (part of `make test`), which brings up the cluster")
    workdir = tmp_path_factory.mktemp("kind")
    cluster = Cluster(name="kind", workdir=workdir, kubeconfig=Path(kubeconfig))
    kind = Kind(
        cluster,
        os.environ.get("GPUPIN_KIND_IMAGE", "gpupin.local/gpupin:kind"),
        os.environ.get("GPUPIN_KIND_MODE", "offline"),
    )
    kind.reset()
    yield kind


def _pods_of(kind: Kind, namespace: str, deployment: str) -> list[dict[str, Any]]:
    """The deployment's pods that are not terminating."""
    return [
        p
        for p in kind.cluster.pods(namespace)
        if (p["metadata"].get("labels") or {}).get(constants.DEPLOYMENT_LABEL) == deployment
    ]


def _pod_of(kind: Kind, namespace: str, deployment: str) -> dict[str, Any] | None:
    """The deployment's one pod (not terminating), or None while there is not exactly one."""
    pods = _pods_of(kind, namespace, deployment)
    return pods[0] if len(pods) == 1 else None


def _the_pod(kind: Kind, namespace: str, deployment: str) -> dict[str, Any]:
    return wait_for(
        lambda: _pod_of(kind, namespace, deployment), timeout=60, interval=0.5, what=f"{deployment}'s pod"
    )


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


# -- install ---------------------------------------------------------------------------------


def test_the_chart_runs_the_operator_and_agent_from_the_image(kind: Kind) -> None:
    """helm install --wait: the operator and the agent run from the image the Dockerfile built,
    as uid 65532 (no passwd entry), and stay up; the agent publishes the fake inventory."""
    kind.install()
    (operator,) = kind.operator_pods()
    name = operator["metadata"]["name"]
    wait_for(
        lambda: "gpupin operator started" in kind.logs(SYSTEM, name, tail=400),
        timeout=60,
        what="the operator's start",
    )
    time.sleep(5)  # a crash-looping operator (the getpwuid bug) died within a second of starting
    operator = kind.cluster.get(f"/api/v1/namespaces/{SYSTEM}/pods/{name}")
    (status,) = operator["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, kind.logs(SYSTEM, name)
    assert status["image"].endswith(kind.image)
    uid = kind.kubectl(
        "exec", "-n", SYSTEM, name, "--", "python", "-c", "import os; print(os.getuid())"
    ).stdout
    assert uid.strip() == "65532", uid  # the image's USER, which has no passwd entry
    lease = kind.cluster.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/{RELEASE}-operator")
    assert lease["spec"]["holderIdentity"] == name, "the operator pod holds the chart's Lease (its own RBAC)"
    node = kind.cluster.get(f"/api/v1/nodes/{kind.node}")
    inventory = wait_for(
        lambda: kind.cluster.get(f"/api/v1/nodes/{kind.node}")["metadata"]["annotations"].get(
            constants.INVENTORY_ANNOTATION
        ),
        timeout=60,
        what="the agent's inventory annotation",
    )
    assert UUID_4070 in inventory and UUID_2060 in inventory, inventory
    if kind.mode == "offline":  # the node image built here; a stock kind brings its own
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"


# -- the seed's deployments -------------------------------------------------------------------


def test_the_seed_deployments_get_pinned_pods_and_real_kubelet_reasons(kind: Kind) -> None:
    """The seed's LLMDeployments, applied with kubectl: placed or refused as the seed's analysis
    says, pods pinned one per GPU; the kubelet's view of the pods becomes the Ready reason."""
    kind.kubectl("create", "namespace", SEED)
    seed = sorted((EXAMPLES / "seed").glob("*.yaml"))
    chat = [f for f in seed if yaml.safe_load(f.read_text())["metadata"]["name"] == "chat"]
    kind.kubectl("apply", "-n", SEED, *(a for f in seed if f not in chat for a in ("-f", str(f))))

    def placed(name: str) -> dict[str, Any] | None:
        return kind.cluster.condition(SEED, name, "Placed")

    expected = {
        "assistant": ("True", "Placed"),
        "big-assistant": ("False", "InsufficientVRAM"),
        "chat-tp2": ("False", "HeterogeneousTensorParallel"),
        "phi4": ("False", "InsufficientVRAM"),
    }
    for name, (status, reason) in expected.items():
        condition = wait_for(lambda n=name: placed(n), timeout=60, what=f"{name} Placed")
        assert (condition["status"], condition["reason"]) == (status, reason), condition
    pods = wait_for(  # the status and the pods are written concurrently
        lambda: len(ps := _pods_of(kind, SEED, "assistant")) == 2 and ps,
        timeout=30,
        what="assistant's two pods",
    )
    pinned = sorted(_env(p["spec"]["containers"][0])["NVIDIA_VISIBLE_DEVICES"] or "" for p in pods)
    assert pinned == sorted([UUID_4070, UUID_2060])
    assert {p["spec"]["nodeName"] for p in pods} == {kind.node}

    # chat (vLLM) waits while assistant holds the RTX 4070, and is placed once it is deleted
    kind.kubectl("apply", "-n", SEED, "-f", str(chat[0]))
    waiting = wait_for(lambda: placed("chat"), timeout=60, what="chat Placed")
    assert waiting["status"] == "False", waiting

    if kind.mode == "offline":
        # The real kubelet runs the pull init container, which cannot reach the registry: its
        # last line becomes the pod's termination message, and the deployment's Ready reason.
        pulled = wait_for(
            lambda: (c := kind.ready(SEED, "assistant")) and c["reason"] == "ModelPullFailed" and c,
            timeout=180,
            interval=1,
            what="assistant Ready reason ModelPullFailed",
        )
        message = pulled["message"]  # the worst problem of the two pods: either one's
        assert "cannot pull model(s)" in message and ("qwen2.5:14b" in message or "llama3.1:8b" in message), (
            pulled
        )

    kind.kubectl("delete", "-n", SEED, constants.PLURAL, "assistant", "--wait")
    wait_for(
        lambda: (c := placed("chat")) and c["status"] == "True",
        timeout=60,
        what="chat placed after assistant left",
    )
    pod = _the_pod(kind, SEED, "chat")
    container = pod["spec"]["containers"][0]
    env = _env(container)
    assert container["image"] == yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["vllmImage"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == UUID_4070 and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["command"] == ["vllm", "serve"] and "Qwen/Qwen2.5-3B-Instruct" in container["args"]
    if kind.mode == "offline":
        # no vLLM image here: the kubelet's ImagePullBackOff is the reason the deployment gives
        failed = wait_for(
            lambda: (c := kind.ready(SEED, "chat")) and c["reason"] == "ImagePullFailed" and c,
            timeout=120,
            interval=1,
            what="chat Ready reason ImagePullFailed",
        )
        assert pod["metadata"]["name"] in failed["message"], failed
    assert (
        not kind.cluster.get(f"/api/v1/namespaces/{SEED}/pods/{pod['metadata']['name']}")["status"]
        .get("containerStatuses", [{}])[0]
        .get("ready")
    )
    kind.kubectl("delete", "namespace", SEED, "--wait=false")  # stop pulls on a stock kind at once


# -- a real Ollama pod ------------------------------------------------------------------------


def _seed_models(kind: Kind) -> None:
    """Pre-seed the model volume: the Ollama image itself runs ``ollama create`` for the two tiny
    GGUF models into a hostPath on the node (see the module docstring), as root, then gives the
    files to the user gpupin's Ollama pods run as (a hostPath gets no fsGroup from the kubelet;
    the served pod writes there when a model is copied or deleted through its API)."""
    files: dict[str, str] = {}
    for name, embedding in (("gpupin-tiny", False), ("gpupin-tiny-embed", True)):
        path = kind.cluster.workdir / f"{name}.gguf"
        write_tiny_gguf(path, embedding=embedding)
        files[f"{name}.gguf"] = base64.b64encode(path.read_bytes()).decode()
    kind.cluster.kube.request(  # not kubectl apply: its last-applied annotation would not fit
        "POST",
        f"/api/v1/namespaces/{SERVE}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tiny-gguf"}, "binaryData": files},
    )
    script = """
ollama serve >/tmp/serve.log 2>&1 &
for _ in $(seq 1 60); do ollama list >/dev/null 2>&1 && break; sleep 1; done
for m in gpupin-tiny gpupin-tiny-embed; do
  echo "FROM /seed/$m.gguf" >/tmp/$m.Modelfile
  ollama create "$m" -f /tmp/$m.Modelfile || { cat /tmp/serve.log; exit 1; }
done
ollama list
chown -R "$OWNER" /models
"""
    log = kind.run_pod(
        SERVE,
        "seed-models",
        {
            "containers": [
                {
                    "name": "create",
                    "image": kind.ollama_image,
                    "command": ["/bin/bash", "-c", script],
                    "env": [
                        {"name": "OLLAMA_MODELS", "value": "/models"},
                        {"name": "OWNER", "value": f"{ollama.RUN_AS}:{ollama.RUN_AS}"},
                    ],
                    "volumeMounts": [
                        {"name": "models", "mountPath": "/models"},
                        {"name": "seed", "mountPath": "/seed"},
                    ],
                }
            ],
            "volumes": [
                {"name": "models", "hostPath": {"path": MODELS_DIR, "type": "DirectoryOrCreate"}},
                {"name": "seed", "configMap": {"name": "tiny-gguf"}},
            ],
        },
    )
    assert "gpupin-tiny-embed:latest" in log and "gpupin-tiny:latest" in log, log


def _ask(kind: Kind, name: str) -> dict[str, Any]:
    """Ask both models through their Services, from a pod in the cluster (cluster DNS and
    kube-proxy in the path): /api/generate and /api/embed. The answers, parsed."""
    services = {
        (s["metadata"].get("annotations") or {}).get("gpupin.dev/model"): s["metadata"]["name"]
        for s in kind.cluster.get(f"/api/v1/namespaces/{SERVE}/services")["items"]
    }
    program = f"""
import json, time, urllib.error, urllib.request
def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {{"Content-Type": "application/json"}})
    for attempt in range(30):  # kube-proxy may lag a moment behind a pod that was just replaced
        try:
            return json.load(urllib.request.urlopen(request, timeout=120))
        except urllib.error.URLError as exc:
            if isinstance(exc, urllib.error.HTTPError) or attempt == 29:
                raise
            print("retrying:", exc, flush=True)
            time.sleep(1)
generated = post("http://{services["gpupin-tiny"]}:11434/api/generate",
                 {{"model": "gpupin-tiny", "prompt": "hello", "stream": False, "options": {{"num_predict": 4}}}})
embedded = post("http://{services["gpupin-tiny-embed"]}:11434/api/embed", {{"model": "gpupin-tiny-embed", "input": "hello"}})
# the deployment's one endpoint: the router's Service, named after it, routing by the model named
routed = post("http://tiny:11434/api/generate",
              {{"model": "gpupin-tiny", "prompt": "hello", "stream": False, "options": {{"num_predict": 4}}}})
routed_embed = post("http://tiny:11434/v1/embeddings", {{"model": "gpupin-tiny-embed", "input": "hello"}})
tags = json.load(urllib.request.urlopen("http://tiny:11434/api/tags", timeout=60))
print(json.dumps({{"generate": generated, "embed": embedded, "routed": routed, "routed_embed": routed_embed,
                  "tags": tags}}))
"""
    log = kind.run_pod(
        SERVE,
        name,
        {
            "containers": [
                {
                    "name": "client",
                    "image": kind.image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", program],
                }
            ]
        },
    )
    return json.loads(log.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_real_ollama_pod_serves_through_its_services(kind: Kind) -> None:
    """The Ollama image runs gpupin's init container, hooks and probes in a real pod: the pod
    becomes Ready with both models loaded, the deployment says so, and the models answer
    /api/generate and /api/embed through their Services."""
    kind.kubectl("create", "namespace", SERVE)
    _seed_models(kind)
    kind.cluster.apply(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": "gpupin-kind-models"},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": MODELS_DIR, "type": "Directory"},
                        "claimRef": {"namespace": SERVE, "name": "models"},
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "models", "namespace": SERVE},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "",
                        "volumeName": "gpupin-kind-models",
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "metadata": {"name": "tiny", "namespace": SERVE},
                    "spec": {"engine": "ollama", "models": TINY, "storage": {"existingClaim": "models"}},
                },
            ]
        )
    )
    started = time.monotonic()
    ready = wait_for(
        lambda: (c := kind.ready(SERVE, "tiny")) and c["status"] == "True" and c,
        timeout=180,
        interval=0.5,
        what="tiny Ready",
    )
    seconds = time.monotonic() - started
    assert ready["reason"] == "PodsReady", ready
    pod = _the_pod(kind, SERVE, "tiny")
    name = pod["metadata"]["name"]
    pull = kind.logs(SERVE, name, "pull-models")
    assert "using the copy in the cache" in pull, pull  # no registry has gpupin-tiny, offline or not
    hook = kind.kubectl(
        "exec", "-n", SERVE, name, "-c", "ollama", "--", "cat", "/tmp/gpupin-preload.log"
    ).stdout
    assert "gpupin-tiny:latest loaded" in hook and "gpupin-tiny-embed:latest loaded" in hook, hook
    endpoint = wait_for(  # the real router's pod answers its readiness probe
        lambda: (c := kind.cluster.condition(SERVE, "tiny", "EndpointReady")) and c["status"] == "True" and c,
        timeout=120,
        interval=0.5,
        what="tiny EndpointReady",
    )
    assert endpoint["reason"] == "RouterReady", endpoint
    assert kind.cluster.deployment(SERVE, "tiny")["status"]["endpoint"] == f"tiny.{SERVE}.svc:11434"
    answers = _ask(kind, "ask-1")
    assert answers["generate"]["done"] and answers["generate"]["model"] == "gpupin-tiny", answers
    assert answers["generate"]["eval_count"] >= 1
    (vector,) = answers["embed"]["embeddings"]
    assert len(vector) > 0 and any(vector)
    assert answers["routed"]["done"] and answers["routed"]["model"] == "gpupin-tiny", answers["routed"]
    assert answers["routed_embed"]["data"][0]["object"] == "embedding", answers["routed_embed"]
    assert sorted(m["name"] for m in answers["tags"]["models"]) == [
        "gpupin-tiny-embed:latest",
        "gpupin-tiny:latest",
    ]
    print(f"tiny: Ready {seconds:.1f} s after kubectl apply")


def test_a_crashed_server_turns_the_deployment_not_ready_then_ready(kind: Kind) -> None:
    """The server process dies: the kubelet restarts the container (the same pod), the
    deployment goes not Ready, then Ready once the hook has loaded the models again."""
    pod = _the_pod(kind, SERVE, "tiny")
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    watch = ReadyWatch(kind, SERVE, "tiny")
    try:
        wait_for(lambda: watch.statuses == ["True"], timeout=30, what="Ready before")
        kind.kubectl("exec", "-n", SERVE, name, "-c", "ollama", "--", "/bin/bash", "-c", "kill 1")
        wait_for(
            lambda: watch.statuses == ["True", "False", "True"],
            timeout=120,
            interval=0.5,
            what=f"Ready, then not Ready, then Ready (seen: {watch.seen})",
        )
    finally:
        watch.close()
    assert watch.seen[1][1] in ("PodsNotReady", "ServerCrashed", "ModelNotLoaded"), watch.seen
    pod = _the_pod(kind, SERVE, "tiny")
    assert pod["metadata"]["uid"] == uid, "the kubelet restarts the container; the pod is not replaced"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == restarts + 1


_API = r"""
api() {  # METHOD PATH BODY: one request to the local Ollama server (the image has no curl)
  exec 3<>/dev/tcp/127.0.0.1/11434
  printf "%s %s HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" "$1" "$2" "${#3}" "$3" >&3
  head -n 1 <&3; exec 3<&-
}
"""


def _api(kind: Kind, pod: str, *calls: tuple[str, str, dict[str, Any]]) -> None:
    script = _API + "".join(f"api {m} {p} '{json.dumps(b)}'\n" for m, p, b in calls)
    out = kind.kubectl("exec", "-n", SERVE, pod, "-c", "ollama", "--", "/bin/bash", "-c", script).stdout
    assert out.split() == ["HTTP/1.0", "200", "OK"] * len(calls), out


def test_a_model_missing_from_the_server_is_the_reason_the_deployment_is_not_ready(kind: Kind) -> None:
    """A model disappears from the server's store (``ollama rm`` by a person or a script): the
    readiness probe fails, the kubelet marks the pod unready, and the probe's own words reach
    the deployment's Ready condition; put back, the pod and the deployment are Ready again."""
    name = _the_pod(kind, SERVE, "tiny")["metadata"]["name"]
    _api(
        kind, name,
        ("POST", "/api/copy", {"source": "gpupin-tiny", "destination": "gpupin-kept"}),
        ("DELETE", "/api/delete", {"model": "gpupin-tiny"}),
    )  # fmt: skip
    not_ready = wait_for(
        lambda: (
            (c := kind.ready(SERVE, "tiny"))
            and c["status"] == "False"
            and c["reason"] == "ModelNotLoaded"
            and c
        ),
        timeout=120,
        interval=0.5,
        what="Ready=False with reason ModelNotLoaded",
    )
    assert f"pod {name}: gpupin-tiny:latest:" in not_ready["message"], not_ready
    assert "not found" in not_ready["message"], not_ready
    _api(
        kind, name,
        ("POST", "/api/copy", {"source": "gpupin-kept", "destination": "gpupin-tiny"}),
        ("DELETE", "/api/delete", {"model": "gpupin-kept"}),
    )  # fmt: skip
    wait_for(
        lambda: (c := kind.ready(SERVE, "tiny")) and c["status"] == "True",
        timeout=120,
        interval=0.5,
        what="Ready again",
    )


def test_a_deleted_pod_is_created_again_and_serves(kind: Kind) -> None:
    pod = _the_pod(kind, SERVE, "tiny")
    kind.kubectl("delete", "pod", "-n", SERVE, pod["metadata"]["name"], "--wait=false")
    again = wait_for(
        lambda: (p := _pod_of(kind, SERVE, "tiny")) and p["metadata"]["uid"] != pod["metadata"]["uid"] and p,
        timeout=60,
        interval=0.5,
        what="a new pod",
    )
    assert again["spec"]["containers"][0]["env"] == pod["spec"]["containers"][0]["env"], "the same pinning"
    wait_for(
        lambda: (c := kind.ready(SERVE, "tiny")) and c["status"] == "True",
        timeout=120,
        interval=0.5,
        what="Ready",
    )
    assert _ask(kind, "ask-2")["generate"]["done"]


def test_helm_upgrade_replacing_the_operator_mid_way_keeps_the_serving_pod(kind: Kind) -> None:
    """helm upgrade rolls the operator; the new operator pod is killed as it starts, and its
    replacement takes over. The serving pod is never touched: same pod, no restart, Ready."""
    before = _the_pod(kind, SERVE, "tiny")
    restarts = before["status"]["containerStatuses"][0]["restartCount"]
    (old,) = kind.operator_pods()
    pool = ThreadPoolExecutor(1)
    upgrade = pool.submit(kind.install, podAnnotations={"gpupin.dev/rollout": str(time.time())})
    new = wait_for(
        lambda: [p for p in kind.operator_pods() if p["metadata"]["uid"] != old["metadata"]["uid"]],
        timeout=60,
        interval=0.2,
        what="the upgraded operator pod",
    )[0]
    wait_for(
        lambda: "gpupin operator started" in kind.logs(SYSTEM, new["metadata"]["name"], tail=400),
        timeout=60,
        interval=0.2,
        what="the upgraded operator to start",
    )
    kind.kubectl("delete", "pod", "-n", SYSTEM, new["metadata"]["name"], "--grace-period=0", "--force")
    upgrade.result(timeout=300)  # helm's own failure, if any, is raised here
    pool.shutdown()
    (current,) = wait_for(
        lambda: (
            (ops := kind.operator_pods())
            and len(ops) == 1
            and all(s["ready"] for p in ops for s in p["status"].get("containerStatuses", []))
            and ops
        ),
        timeout=120,
        what="one ready operator",
    )
    assert current["metadata"]["uid"] not in (old["metadata"]["uid"], new["metadata"]["uid"])
    wait_for(
        lambda: "gpupin operator started" in kind.logs(SYSTEM, current["metadata"]["name"], tail=400),
        timeout=60,
        what="the replacement operator to start",
    )
    lease = kind.cluster.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/{RELEASE}-operator")
    assert lease["spec"]["holderIdentity"] == current["metadata"]["name"], lease["spec"]
    # it reconciles the deployment (resync at start) and leaves the pod as it is
    time.sleep(5)
    after = _the_pod(kind, SERVE, "tiny")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == restarts
    ready = kind.ready(SERVE, "tiny")
    assert ready and ready["status"] == "True", ready


def test_helm_uninstall_keeps_the_crd_the_deployments_and_their_pods(kind: Kind) -> None:
    pod = _the_pod(kind, SERVE, "tiny")
    kind.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait")
    assert not kind.operator_pods()
    crd = kind.cluster.get(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{constants.PLURAL}.{constants.GROUP}"
    )
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert kind.cluster.deployment(SERVE, "tiny")["spec"]["models"] == TINY
    time.sleep(3)
    after = _the_pod(kind, SERVE, "tiny")
    assert (
        after["metadata"]["uid"] == pod["metadata"]["uid"]
        and after["status"]["containerStatuses"][0]["ready"]
    )
