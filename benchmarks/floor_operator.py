"""The floor for the operator benchmark: a minimal kopf operator that creates one owned pod per CR.

Nothing but what any operator must do — notice the CR, create a pod owned by it — so the
gap between this and gpupin is what planning, rendering, status and Events cost.
"""

from typing import Any

import kopf
from kubernetes import client, config

config.load_kube_config()
API = client.CoreV1Api()


@kopf.on.create("bench.gpupin.dev", "v1", "floors")
def create_pod(name: str, namespace: str, uid: str, **_: Any) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-pod",
            "ownerReferences": [
                {
                    "apiVersion": "bench.gpupin.dev/v1",
                    "kind": "Floor",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    API.create_namespaced_pod(namespace, pod)
