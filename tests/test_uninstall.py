"""hack/uninstall.sh against the real API server, garbage collector and kubectl: every
LLMDeployment goes and, through its ownerReferences, every pod and Service gpupin made; the
labels and annotations the agents wrote leave the Nodes, the operator's Lease goes. (--no-helm:
no release in this cluster — the operator runs as a process here, stopped first as `helm
uninstall` would; --keep-crd: the cluster is shared with the other tests.)"""

from __future__ import annotations

import os
import subprocess

from gpupin import constants

from helpers import REPO, RTX_2060, RTX_4070
from kwok import Env, tools_bin, wait_for


def test_uninstall_leaves_nothing_gpupin_made(env: Env) -> None:
    inventory = env.node("workstation", RTX_4070, RTX_2060)
    node = f"/api/v1/nodes/{inventory.name}"
    env.cluster.kubectl(
        "label", "node", inventory.name, f"{constants.GPU_COUNT_LABEL}=2", f"{constants.MIXED_LABEL}=true"
    )
    operator = env.operator()
    env.apply("assistant", engine="ollama", models=[{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}])
    wait_for(lambda: len(env.pods()) == 2, what="its pods")
    script = [str(REPO / "hack" / "uninstall.sh"), "--no-helm", "--keep-crd", "--namespace", env.namespace]
    unasked = subprocess.run(
        script, input="y\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(env.cluster.kubeconfig), "KUBECTL": str(tools_bin() / "kubectl")},
    )  # fmt: skip
    assert unasked.returncode == 2 and "pass --yes" in unasked.stderr and len(env.pods()) == 2, (
        "no terminal: no"
    )
    lease = f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases/gpupin-operator"
    assert env.cluster.get(lease)
    operator.stop()  # as helm uninstall would, before the rest
    done = subprocess.run(
        [*script, "--yes"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "KUBECONFIG": str(env.cluster.kubeconfig), "KUBECTL": str(tools_bin() / "kubectl")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "gpupin removed" in done.stdout
    assert not env.cluster.get(
        f"/apis/{constants.API_VERSION}/namespaces/{env.namespace}/{constants.PLURAL}"
    )["items"]
    wait_for(lambda: not env.pods(), what="the pods gone with their deployment")
    wait_for(
        lambda: not [
            s for s in env.cluster.get(f"/api/v1/namespaces/{env.namespace}/services")["items"]
            if (s["metadata"].get("labels") or {}).get(constants.MANAGED_BY_LABEL) == constants.MANAGED_BY
        ],
        what="the Services gone",
    )  # fmt: skip
    meta = env.cluster.get(node)["metadata"]
    assert constants.INVENTORY_ANNOTATION not in (meta.get("annotations") or {})
    assert not {constants.GPU_COUNT_LABEL, constants.MIXED_LABEL} & set(meta.get("labels") or {})
    assert lease not in {
        f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases/{item['metadata']['name']}"
        for item in env.cluster.get(f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases")[
            "items"
        ]
    }, "the Lease goes too"
