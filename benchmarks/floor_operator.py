"""The floor for the operator benchmarks: a minimal kopf operator that creates one owned pod per CR.

Nothing but what any operator must do — notice the CR, create a pod owned by it — so the
gap between this and gpupin is what planning, rendering, status and Events cost.

A CR with ``spec.service: true`` also gets what any operator *serving a model* must write: a
ClusterIP Service owned by the CR that selects the pod, and a status (kopf writes the handler's
result into ``status.create_pod`` in the patch that ends the handling). That second floor makes
the writes a serving operator cannot avoid — a pod, a Service (whose Endpoints, EndpointSlice and
IPAddress follow) and one status patch — so the gap between it and gpupin is gpupin's own: its
code, its second status patch (readiness) and its Events.
"""

from typing import Any

import kopf
from kubernetes import client, config

config.load_kube_config()
API = client.CoreV1Api()


@kopf.on.create("bench.gpupin.dev", "v1", "floors")
def create_pod(name: str, namespace: str, uid: str, spec: Any, **_: Any) -> dict[str, str] | None:
    owner = {
        "apiVersion": "bench.gpupin.dev/v1",
        "kind": "Floor",
        "name": name,
        "uid": uid,
        "controller": True,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-pod", "labels": {"floor": name}, "ownerReferences": [owner]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    API.create_namespaced_pod(namespace, pod)
    if not spec.get("service"):
        return None
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"selector": {"floor": name}, "ports": [{"port": 8000, "targetPort": 8000}]},
    }
    API.create_namespaced_service(namespace, service)
    return {"pod": f"{name}-pod", "service": name}
