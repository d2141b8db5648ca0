"""Rollouts, pure: a changed deployment replaces its pods without taking down more than it may.

A small simulation drives :func:`gpupin.controller.decide.decide` the way the operator does: each
round plans against the inventory (the deployment's pods as hints, newest first), applies the
writes, and plays the kubelet — a deleted pod terminates and is gone the round after, a new pod is
Ready the round after it was created. The surge plan is the operator's: planned beside the
outgoing pods, whose GPUs are held (:func:`gpupin.controller.rollout.surge_plan`).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from gpupin import constants, reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.controller.decide import Actions, decide
from gpupin.controller.podstate import is_ready, is_terminating, placement_of
from gpupin.controller.rollout import DEFAULT_POLICY, RolloutGate, RolloutPolicy, converge, hints, surge_plan
from gpupin.controller.status import condition
from gpupin.inventory import Inventory
from gpupin.planner import Planner
from gpupin.render import RenderConfig

from helpers import A10, inventory, node

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
QWEN = "Qwen/Qwen2.5-3B-Instruct"


class Sim:
    """One deployment's pods through a few reconciles."""

    def __init__(self, cluster: Inventory, spec: dict[str, Any]) -> None:
        self.cluster = cluster
        self.body: dict[str, Any] = {
            "apiVersion": "gpupin.dev/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": "chat", "namespace": "default", "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
        self.pods: list[dict[str, Any]] = []
        self.services: list[dict[str, Any]] = []
        self.clock = 0
        self.ready_seen: list[int] = []
        self.config = RenderConfig()

    def edit(self, **spec: Any) -> None:
        meta = self.body["metadata"]
        self.body = {
            **self.body,
            "spec": {**self.body["spec"], **spec},
            "metadata": {**meta, "generation": meta["generation"] + 1},
        }

    def reconcile(
        self, surge: bool = True, replace_ready: bool = True, rejected: str | None = None
    ) -> Actions:
        deployment = LLMDeployment.model_validate(
            {k: self.body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        )
        settings = deployment.spec.rollout
        policy = RolloutPolicy(
            settings.max_unavailable if settings else 1, settings.max_surge if settings else 1, replace_ready
        )
        planner = Planner(self.cluster)
        plan = planner.plan(deployment, hints(self.pods), commit=False)

        def run(plan: Any) -> Actions:
            return decide(
                self.body, deployment, None, plan, self.pods, self.services, [], self.cluster, self.config, NOW,
                policy=policy, rejected=rejected,
            )  # fmt: skip

        actions = run(plan)
        step = actions.step
        if surge and step is not None and step.in_place and policy.max_surge and replace_ready:
            alternative = surge_plan(planner, deployment, self.pods, step.up_to_date)
            if alternative is not None:
                actions = run(alternative)
        self._apply(actions)
        return actions

    def kubelet(self) -> None:
        """Between two reconciles: terminating pods are gone, the others are Ready."""
        self.pods = [p for p in self.pods if not is_terminating(p)]
        for pod in self.pods:
            pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}

    def _apply(self, actions: Actions) -> None:
        self.clock += 1
        deleted = {o["metadata"]["name"] for o, _ in actions.delete if o["kind"] == "Pod"}
        for pod in self.pods:
            if pod["metadata"]["name"] in deleted:
                pod["metadata"]["deletionTimestamp"] = "2026-11-30T12:00:00Z"
        self.services = [
            s
            for s in self.services
            if s["metadata"]["name"] not in {o["metadata"]["name"] for o, _ in actions.delete}
        ]
        for obj in actions.create:
            made = copy.deepcopy(obj)
            made["metadata"]["uid"] = f"uid-{obj['metadata']['name']}-{self.clock}"
            made["metadata"]["creationTimestamp"] = f"2026-11-30T12:{self.clock:02d}:00Z"
            if obj["kind"] == "Pod":
                made["status"] = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
                self.pods.append(made)
            else:
                self.services.append(made)
        if actions.status is not None:
            self.body = {**self.body, "status": actions.status}
        self.ready_seen.append(sum(1 for p in self.pods if is_ready(p) and not is_terminating(p)))

    def settle(self, rounds: int = 20, **kwargs: Any) -> None:
        """Reconcile and play the kubelet until nothing changes."""
        for _ in range(rounds):
            actions = self.reconcile(**kwargs)
            self.kubelet()
            if not (actions.create or actions.delete or actions.waiting):
                return
        raise AssertionError(f"no steady state after {rounds} reconciles")


def _images(sim: Sim) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in sim.pods if not is_terminating(p)}


def test_an_image_change_on_three_replicas_keeps_two_ready_when_no_gpu_is_free() -> None:
    sim = Sim(inventory(node("box", A10, A10, A10)), {"models": [{"name": QWEN}], "replicas": 3})
    sim.settle()
    assert len(sim.pods) == 3 and sim.ready_seen[-1] == 3
    sim.ready_seen.clear()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    first = sim.reconcile()
    assert len([o for o, _ in first.delete if o["kind"] == "Pod"]) == 1, "one replica at a time"
    assert first.step is not None and [o["metadata"]["name"] for o in first.step.trial] == [
        first.delete[0][0]["metadata"]["name"]
    ], "its replacement is checked by the API server before the old one goes"
    ready = condition(first.status or {}, reasons.READY)
    assert ready is not None and ready["reason"] == reasons.ROLLING_OUT
    sim.settle()
    assert _images(sim) == {"vllm/vllm-openai:v0.34.0"} and len(sim.pods) == 3
    assert min(sim.ready_seen) >= 2, f"never fewer than 2 Ready: {sim.ready_seen}"
    final = condition(sim.body["status"], reasons.READY)
    assert final is not None and (final["status"], final["reason"]) == ("True", reasons.PODS_READY)


def test_one_replica_surges_onto_a_free_gpu_and_the_old_pod_serves_until_the_new_one_is_ready() -> None:
    sim = Sim(inventory(node("box", A10, A10)), {"models": [{"name": QWEN}]})
    sim.settle()
    (old,) = sim.pods
    sim.ready_seen.clear()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    first = sim.reconcile()
    assert first.delete == [] and [o["kind"] for o in first.create] == ["Pod"], "a surge: new pod first"
    new = first.create[0]
    assert placement_of(new).gpu_uuids != placement_of(old).gpu_uuids  # type: ignore[union-attr]
    second = sim.reconcile()
    assert second.delete == [], "the new pod is not Ready yet: the old one keeps serving"
    sim.kubelet()
    sim.settle()
    assert [p["metadata"]["name"] for p in sim.pods] == [new["metadata"]["name"]]
    assert min(sim.ready_seen) >= 1, f"never without a Ready pod: {sim.ready_seen}"


def test_one_replica_with_no_free_gpu_is_replaced_in_place_without_waiting() -> None:
    sim = Sim(inventory(node("box", A10)), {"models": [{"name": QWEN}]})
    sim.settle()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    first = sim.reconcile()
    assert [o["kind"] for o, _ in first.delete] == ["Pod"], "no GPU to surge onto: replace in place"
    sim.settle()
    assert _images(sim) == {"vllm/vllm-openai:v0.34.0"}


def test_max_unavailable_zero_waits_for_a_free_gpu_and_says_so() -> None:
    sim = Sim(inventory(node("box", A10)), {"models": [{"name": QWEN}], "rollout": {"maxUnavailable": 0}})
    sim.settle()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    for _ in range(3):
        actions = sim.reconcile()
        sim.kubelet()
        assert actions.delete == [] and actions.create == []
    ready = condition(sim.body["status"], reasons.READY)
    assert ready is not None and ready["status"] == "True", "the old pod serves"
    assert "maxUnavailable 0" in ready["message"]


def test_pods_that_serve_no_one_are_replaced_at_once() -> None:
    sim = Sim(inventory(node("box", A10, A10, A10)), {"models": [{"name": QWEN}], "replicas": 3})
    sim.settle()
    for pod in sim.pods:
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    actions = sim.reconcile(surge=False)
    assert len(actions.delete) == 3, "not Ready: nothing to keep available"


def test_the_operator_can_hold_a_rollout_back() -> None:
    sim = Sim(inventory(node("box", A10, A10)), {"models": [{"name": QWEN}]})
    sim.settle()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    held = sim.reconcile(replace_ready=False)
    assert held.delete == [] and held.create == [], "no surge either while its turn has not come"
    ready = condition(sim.body["status"], reasons.READY)
    assert ready is not None and "its turn" in ready["message"]


def test_replicas_zero_pauses_and_frees_the_gpus() -> None:
    sim = Sim(inventory(node("box", A10, A10)), {"models": [{"name": QWEN}], "replicas": 2})
    sim.settle()
    sim.edit(replicas=0)
    actions = sim.reconcile()
    assert sorted(o["kind"] for o, _ in actions.delete) == ["Pod", "Pod"], "both at once: paused"
    assert all(e.reason != "Warning" for e in actions.events)
    status = sim.body["status"]
    placed = condition(status, reasons.PLACED)
    ready = condition(status, reasons.READY)
    assert placed is not None and (placed["status"], placed["reason"]) == ("True", reasons.PAUSED)
    assert ready is not None and ready["reason"] == reasons.PAUSED
    sim.settle()
    assert sim.pods == [] and sim.body["status"]["ready"] == "0/0" and sim.body["status"]["gpus"] == 0
    sim.edit(replicas=1)
    sim.settle()
    assert len(sim.pods) == 1, "served again"


def test_a_model_change_that_does_not_fit_keeps_the_old_model_serving_and_says_so() -> None:
    sim = Sim(inventory(node("box", A10)), {"engine": "ollama", "models": [{"name": "llama3.1:8b"}]})
    sim.settle()
    sim.edit(models=[{"name": "llama3.1:70b"}])
    actions = sim.reconcile()
    assert actions.delete == [] and actions.create == []
    status = sim.body["status"]
    ready = condition(status, reasons.READY)
    degraded = condition(status, reasons.DEGRADED)
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", reasons.EARLIER_SPEC_SERVING)
    assert "llama3.1:8b" in ready["message"]
    assert degraded is not None and degraded["status"] == "False", "nothing was lost"
    assert status["ready"] == "0/1", "no pod serves the current spec"
    assert status["models"] == "llama3.1:70b (serving llama3.1:8b)"
    assert [p["state"] for p in status["placements"]] == ["Outdated"]


def test_a_rejected_plan_writes_nothing_but_its_status() -> None:
    sim = Sim(inventory(node("box", A10, A10)), {"models": [{"name": QWEN}]})
    sim.settle()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    why = "the API server refused Pod chat-abc (422 Unprocessable Entity): spec.tolerations[0].operator: Unsupported value"
    actions = sim.reconcile(rejected=why)
    assert actions.create == [] and actions.delete == []
    assert actions.step is not None and actions.step.trial == [], "nothing tried again: no dry-run loop"
    placed = condition(sim.body["status"], reasons.PLACED)
    ready = condition(sim.body["status"], reasons.READY)
    assert placed is not None and (placed["status"], placed["reason"]) == ("False", reasons.POD_REJECTED)
    assert ready is not None and ready["reason"] == reasons.POD_REJECTED and "422" in ready["message"]


def test_the_gate_rolls_operator_wide_changes_a_few_at_a_time() -> None:
    gate = RolloutGate(limit=2, stall_seconds=600)
    a, b, c, d = (("ns", n) for n in "abcd")
    for key in (a, b, c, d):
        gate.settle(key, 1)
    assert gate.allows(a, 1, 0.0) and gate.allows(b, 1, 0.0)
    assert not gate.allows(c, 1, 0.0), "two slots, both taken"
    assert gate.allows(d, 2, 0.0), "its own spec changed: it rolls at once"
    assert gate.settle(a, 1) == {c}, "a slot freed: the waiting one is woken"
    assert gate.allows(c, 1, 1.0)
    assert not gate.allows(("ns", "e"), None, 2.0), "first seen since start: takes its turn"
    assert gate.allows(("ns", "e"), None, 700.0), "a slot held past stall_seconds no longer blocks"


def test_a_rollout_is_done_only_when_the_replacement_is_ready() -> None:
    """The operator's rollout slot is given back on `step.done`, not when the last old pod goes."""
    sim = Sim(inventory(node("box", A10)), {"models": [{"name": QWEN}]})
    sim.settle()
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    deleting = sim.reconcile()
    assert deleting.step is not None and not deleting.step.done
    sim.kubelet()  # the old pod is gone
    creating = sim.reconcile()
    assert creating.step is not None and creating.step.replacing == 0 and not creating.step.done
    starting = sim.reconcile()  # the new pod exists, not Ready yet
    assert starting.step is not None and not starting.step.done
    sim.kubelet()
    ready = sim.reconcile()
    assert ready.step is not None and ready.step.done


def test_pods_on_a_node_whose_inventory_cannot_be_trusted_are_not_replaced() -> None:
    sim = Sim(inventory(node("box", A10, A10)), {"models": [{"name": QWEN}]})
    sim.settle()
    (serving,) = sim.pods
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    deployment = LLMDeployment.model_validate(
        {k: sim.body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    )
    plan = Planner(sim.cluster).plan(deployment, hints(sim.pods), commit=False)
    actions = decide(
        sim.body, deployment, None, plan, sim.pods, sim.services, [], sim.cluster, sim.config, NOW,
        node_notes={"box": "annotation gpupin.dev/gpu-inventory is not JSON"},
    )  # fmt: skip
    assert actions.delete == [] and actions.create == [], "nothing replaced, nothing new beside it"
    assert actions.step is not None and "cannot be trusted" in actions.step.held_back
    assert sim.pods == [serving]


def test_a_gpu_known_by_another_name_still_blocks_its_replacement() -> None:
    """GFD's stand-in UUID and the agent's UUID of the same card are one GPU for the rollout."""
    sim = Sim(inventory(node("box", A10)), {"models": [{"name": QWEN}], "rollout": {"maxSurge": 0}})
    sim.settle()
    (old,) = sim.pods
    placed = placement_of(old)
    assert placed is not None
    renamed = {"GFD-box-0": placed.gpu_uuids[0]}
    annotation = old["metadata"]["annotations"]["gpupin.dev/placement"]
    old["metadata"]["annotations"]["gpupin.dev/placement"] = annotation.replace(
        placed.gpu_uuids[0], "GFD-box-0"
    )
    sim.edit(image="vllm/vllm-openai:v0.34.0")
    deployment = LLMDeployment.model_validate(
        {k: sim.body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    )
    plan = Planner(sim.cluster).plan(deployment, (), commit=False)  # the plan picks the card by its new name
    actions = decide(
        sim.body, deployment, None, plan, sim.pods, sim.services, [], sim.cluster, sim.config, NOW,
        policy=RolloutPolicy(max_surge=0), gpu_aliases=renamed,
    )  # fmt: skip
    created = [o for o in actions.create if o["kind"] == "Pod"]
    new_gpus = {u for o in created if (p := placement_of(o)) for u in p.gpu_uuids}
    assert placed.gpu_uuids[0] not in new_gpus, "never a new pod on the card the old one holds"
    assert [o["metadata"]["name"] for o, _ in actions.delete] == [old["metadata"]["name"]], (
        "replaced in place"
    )


def test_a_network_policy_follows_the_plan_like_a_service() -> None:
    """Created with the plan's other objects (before the pods), replaced when its hash changed
    (the old one deleted, the new one once it is gone), deleted when the plan has none."""

    def policy(hash_: str) -> dict[str, Any]:
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": "chat-gpupin", "labels": {constants.SPEC_HASH_LABEL: hash_}},
        }

    created = converge([policy("new")], [], [], [], [], DEFAULT_POLICY)
    assert created.create == [policy("new")] and created.delete == []
    same = converge([policy("new")], [], [], [], [], DEFAULT_POLICY, network_policies=[policy("new")])
    assert (same.create, same.delete, same.waiting) == ([], [], False)
    changed = converge([policy("new")], [], [], [], [], DEFAULT_POLICY, network_policies=[policy("old")])
    assert changed.delete == [(policy("old"), None)] and changed.create == [] and changed.waiting
    dropped = converge([], [], [], [], [], DEFAULT_POLICY, network_policies=[policy("old")])
    assert dropped.delete == [(policy("old"), None)]


def test_a_changed_network_policy_is_created_before_the_old_one_goes() -> None:
    """Its name carries its rules' hash: the successor is created while the old one still guards the
    pods (policies add up), and the old one is deleted only once the successor exists."""

    def policy(name: str) -> dict[str, Any]:
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": {constants.SPEC_HASH_LABEL: name}},
        }

    first = converge(
        [policy("chat-gpupin-b")], [], [], [], [], DEFAULT_POLICY, network_policies=[policy("chat-gpupin-a")]
    )
    assert first.create == [policy("chat-gpupin-b")] and first.delete == [] and first.waiting
    both = [policy("chat-gpupin-a"), policy("chat-gpupin-b")]
    second = converge([policy("chat-gpupin-b")], [], [], [], [], DEFAULT_POLICY, network_policies=both)
    assert second.create == [] and second.delete == [(policy("chat-gpupin-a"), None)]


def test_router_objects_are_written_over_in_place_services_are_made_again() -> None:
    """A changed router Deployment, routes ConfigMap or HTTPRoute is replaced in place (the
    Deployment controller then rolls the router's pod: the endpoint is never without one); a
    changed Service is deleted and made again, as before; one whose create is in flight is left."""

    def obj(kind: str, name: str, spec_hash: str, resource_version: str = "7") -> dict[str, Any]:
        labels = {constants.SPEC_HASH_LABEL: spec_hash}
        return {
            "kind": kind,
            "metadata": {"name": name, "labels": labels, "resourceVersion": resource_version},
        }

    desired = [
        obj("Deployment", "a-router", "new"),
        obj("ConfigMap", "a-router", "new"),
        obj("Service", "a", "new"),
    ]
    for item in desired:
        del item["metadata"]["resourceVersion"]
    existing = [
        obj("Deployment", "a-router", "old"),
        obj("ConfigMap", "a-router", "old", "0"),
        obj("Service", "a", "old"),
    ]
    step = converge(desired, [], [], [existing[2]], [], DEFAULT_POLICY, routers=existing[:2])
    assert [(o["kind"], o["metadata"]["resourceVersion"]) for o in step.replace] == [("Deployment", "7")]
    assert step.replace[0]["metadata"]["labels"][constants.SPEC_HASH_LABEL] == "new"
    assert [(o["kind"], o["metadata"]["name"]) for o, _ in step.delete] == [("Service", "a")]
    assert step.create == [] and step.waiting, "the Service is made again once the old one is gone"
