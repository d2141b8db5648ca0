"""The operator's watch-fed cache: the per-owner pod index and holds stay equal to a full scan.

Aspects: pods_of and holds(only=…) read an index kept by the pod store's change hook; after any
sequence of upserts, removals and deletions marked by the operator, they match what scanning every
pod gives; every change marks its owner dirty for the reconciler's planner. Only pods a live
LLMDeployment controls (by uid) count — forgeries hold nothing — and a deleted deployment's pods
hold until they are gone (remembered within a bound). A sweep against a full list removes what
the list shows gone, never a reservation or what is newer than the list.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gpupin import constants
from gpupin.controller.cache import ClusterCache
from gpupin.controller.store import Store, key_of


def _pod(name: str, owner: str, uid: str, rv: int, gpu: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": str(rv),
            "labels": {constants.DEPLOYMENT_LABEL: owner},
            "ownerReferences": [
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "name": owner,
                    "controller": True,
                    "uid": f"o-{owner}",
                }
            ],
            "annotations": {
                constants.PLACEMENT_ANNOTATION: json.dumps(
                    {
                        "node": "n",
                        "exclusive": True,
                        "models": ["m"],
                        "gpus": [{"index": 0, "uuid": gpu, "name": "x", "vramBytes": 1}],
                    }
                )
            },
        },
    }


def _deployment(name: str, uid: str | None = None, namespace: str = "ns") -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"o-{name}", "resourceVersion": "1"},
    }


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["upsert", "remove", "deleting"]), st.integers(0, 5), st.sampled_from("ab")
        ),
        max_size=40,
    )
)
def test_owner_index_matches_a_full_scan(steps: list[tuple[str, int, str]]) -> None:
    cache = ClusterCache()
    for owner in "ab":
        cache.deployments.upsert(_deployment(owner))
    rv = 0
    for action, n, owner in steps:
        rv += 1
        pod = _pod(f"p{n}", owner, f"uid-{n}-{owner}", rv, f"GPU-{n}")
        cache.dirty_owners.clear()
        if action == "upsert":
            existing = cache.pods.get(key_of(pod))
            if existing is not None and existing["metadata"]["uid"] != pod["metadata"]["uid"]:
                continue  # one name, one owner at a time, as in a cluster
            changed = cache.pods.upsert(pod)
        elif action == "remove":
            changed = (
                cache.pods.get(key_of(pod)) is not None
                and cache.pods.get(key_of(pod))["metadata"]["uid"] == pod["metadata"]["uid"]
            )
            cache.pods.remove(pod)
        else:
            changed = cache.pods.get(key_of(pod)) is not None
            cache.pods.mark_deleting(pod)
        if changed and action != "deleting":
            assert ("ns", owner) in cache.dirty_owners
    for owner in "ab":
        scanned = [
            p for p in cache.pods.values() if p["metadata"]["labels"][constants.DEPLOYMENT_LABEL] == owner
        ]
        assert sorted(p["metadata"]["name"] for p in cache.pods_of(("ns", owner))) == sorted(
            p["metadata"]["name"] for p in scanned
        )
        assert sorted(h.uuid for h in cache.holds(only=("ns", owner))) == sorted(
            h.uuid for h in cache.holds() if h.owner == f"ns/{owner}"
        )


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["upsert", "remove", "deleting", "sweep"]),
            st.integers(0, 4),
            st.lists(st.sampled_from("abc"), max_size=2),
        ),
        max_size=40,
    )
)
def test_a_stores_owner_index_matches_a_full_scan(steps: list[tuple[str, int, list[str]]]) -> None:
    """Services, claim templates and NetworkPolicies are found by owner uid from an index: whatever
    happened to them (an object re-made under its name by another owner, removed, marked deleting,
    swept), the index names exactly the objects a scan of every one would."""
    store = Store()
    for rv, (action, n, owners) in enumerate(steps, start=1):
        refs = [{"kind": constants.KIND, "name": o, "uid": f"o-{o}"} for o in owners]
        obj = {
            "kind": "Service",
            "metadata": {"name": f"s{n}", "namespace": "ns", "uid": f"u{rv}", "resourceVersion": str(rv),
                         "ownerReferences": refs},
        }  # fmt: skip
        existing = store.get(key_of(obj))
        if action == "upsert":
            store.upsert(obj)
        elif action == "remove" and existing is not None:
            store.remove(existing)
        elif action == "deleting" and existing is not None:
            store.mark_deleting(existing)
        elif action == "sweep":
            store.sweep([o for o in store.values() if o["metadata"]["name"] != f"s{n}"], rv)
    for owner in "abcd":
        body = _deployment(owner)
        scanned = [
            o
            for o in store.values()
            if any(r.get("uid") == f"o-{owner}" for r in o["metadata"].get("ownerReferences") or [])
        ]
        assert sorted(key_of(o) for o in store.owned_by(body)) == sorted(key_of(o) for o in scanned)
        assert all(o is store.get(key_of(o)) for o in store.owned_by(body))


def _forged(
    pod: dict[str, Any], namespace: str | None = None, uid: str | None = "", ref: bool = True
) -> dict[str, Any]:
    """``pod`` as someone else could make it: in another namespace, with another owner uid, or
    with no ownerReference at all (the label and the annotation copied)."""
    meta = dict(pod["metadata"])
    if namespace is not None:
        meta["namespace"] = namespace
    if not ref:
        meta.pop("ownerReferences")
    elif uid != "":
        meta["ownerReferences"] = [{**meta["ownerReferences"][0], "uid": uid}]
    return {**pod, "metadata": meta}


def test_only_pods_a_live_deployment_controls_hold_gpus() -> None:
    """A pod with gpupin's label and a placement annotation claiming a GPU is not gpupin's unless
    its controller reference has the uid of a live LLMDeployment of its namespace: a forgery holds
    nothing, is no one's pod, counts in no metric."""
    cache = ClusterCache()
    cache.deployments.upsert(_deployment("a"))
    real = _pod("p0", "a", "uid-real", 1, "GPU-0")
    forgeries = [
        _forged(_pod("p1", "a", "uid-1", 2, "GPU-1"), uid="o-wrong"),
        _forged(_pod("p2", "a", "uid-2", 3, "GPU-2"), namespace="elsewhere"),
        _forged(_pod("p3", "a", "uid-3", 4, "GPU-3"), ref=False),
        _forged(_pod("p4", "a", "uid-4", 5, "GPU-4"), uid=None),
    ]
    for pod in [real, *forgeries]:
        cache.pods.upsert(pod)
    assert [h.uuid for h in cache.holds()] == ["GPU-0"]
    assert [h.uuid for h in cache.holds(only=("ns", "a"))] == ["GPU-0"]
    assert [p["metadata"]["name"] for p in cache.pods_of(("ns", "a"))] == ["p0"]
    assert cache.pods_of(("elsewhere", "a")) == [] and cache.holds(only=("elsewhere", "a")) == []
    assert cache.gpus_per_node() == {"n": 1}
    assert cache.foreign(real) is None
    assert [cache.foreign(p) for p in forgeries] == [
        "its controller ownerReference to LLMDeployment ns/a has uid 'o-wrong', not the live one's",
        "its controller ownerReference names LLMDeployment elsewhere/a, which does not exist",
        "it has no controller ownerReference to a LLMDeployment",
        "its controller ownerReference to LLMDeployment ns/a has uid '', not the live one's",
    ]


def test_pods_count_once_their_deployment_arrives_and_hold_until_gone_after_it_is_deleted() -> None:
    """At start-up a pod can be read before its deployment: stored, it counts once the deployment
    arrives (and the planner is told to read its holds again). A deleted deployment's pods are
    terminating, maybe still on their GPUs: they hold, as a deleted owner's, until they are gone."""
    cache = ClusterCache()
    pod = _pod("p0", "a", "uid-0", 2, "GPU-0")
    cache.pods.upsert(pod)
    assert cache.holds() == [] and cache.owner_of(pod) is None
    cache.dirty_owners.clear()
    cache.deployments.upsert(_deployment("a"))
    assert ("ns", "a") in cache.dirty_owners, "the planner must read a's holds again"
    assert [h.owner for h in cache.holds(only=("ns", "a"))] == ["ns/a"]
    cache.dirty_owners.clear()
    cache.deployments.upsert({**_deployment("a"), "status": {"x": 1}})
    assert not cache.dirty_owners, "a status update changes no ownership"
    cache.deployments.remove(_deployment("a"))
    assert ("ns", "a") in cache.dirty_owners
    assert cache.pods_of(("ns", "a")) == [], "no live deployment: its reconcile sees no pods"
    assert [h.owner for h in cache.holds(only=("ns", "a"))] == ["ns/a (deleted)"]
    assert cache.hold_owners(("ns", "a")) == ("ns/a", "ns/a (deleted)")
    assert cache.gpus_per_node() == {"n": 1}
    # made again under the same name: the old pods still hold, as the deleted one's
    cache.deployments.upsert(_deployment("a", uid="o-a2"))
    assert [h.owner for h in cache.holds()] == ["ns/a (deleted)"]
    assert cache.pods_of(("ns", "a")) == []
    cache.pods.remove(pod)
    assert cache.holds() == [] and cache.gpus_per_node() == {}


def test_deleted_deployments_are_remembered_within_a_bound() -> None:
    cache = ClusterCache()
    cache.GONE_OWNERS = 2
    pods = []
    for name in "abc":
        cache.deployments.upsert(_deployment(name))
        pods.append(_pod(f"p-{name}", name, f"uid-{name}", 2, f"GPU-{name}"))
        cache.pods.upsert(pods[-1])
        cache.deployments.remove(_deployment(name))
    assert [cache.owner_of(p) for p in pods] == [None, ("ns", "b"), ("ns", "c")]


def _listed(name: str, rv: int | str, uid: str | None = None, namespace: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"u-{name}",
            "resourceVersion": str(rv),
        }
    }


def test_a_sweep_after_a_namespaces_list_touches_only_that_namespace() -> None:
    """Namespaced mode lists each served namespace on its own: the list of one says nothing of another's."""
    store = Store()
    for obj in (
        _listed("a", 10, namespace="one"),
        _listed("b", 10, namespace="two"),
        _listed("c", 10, namespace="one"),
    ):
        store.upsert(obj)
    listed = [_listed("a", 10, namespace="one")]
    swept = store.sweep(listed, "100", namespace="one")
    assert [key_of(o) for o in swept] == [("one", "c")]
    assert sorted(store.objects) == [("one", "a"), ("two", "b")]


def test_a_sweep_removes_what_the_list_shows_gone_and_nothing_newer_or_ours() -> None:
    """Mark and sweep after a full LIST at resourceVersion 100: a stored object the list lacks was
    deleted while the watch was away (no DELETED event came); one newer than the list came from the
    watch after it was taken; one at "0" is our reservation, its create not answered yet."""
    store = Store()
    for obj in (
        _listed("listed", 90),
        _listed("gone", 50),
        _listed("gone-at-the-list", 100),
        _listed("newer", 101),
        _listed("reserved", 0),
        _listed("replaced", 40, uid="old"),
    ):
        store.upsert(obj)
    listed = [_listed("listed", 90), _listed("replaced", 95, uid="new")]
    for obj in listed:
        store.upsert(obj)
    removed: list[str] = []
    swept = store.sweep(listed, "100", remove=lambda obj: removed.append(obj["metadata"]["name"]))
    assert sorted(o["metadata"]["name"] for o in swept) == sorted(removed) == ["gone", "gone-at-the-list"]
    assert sorted(k[1] for k in store.objects) == [
        "gone",
        "gone-at-the-list",
        "listed",
        "newer",
        "replaced",
        "reserved",
    ], "with a callback, the callback removes"
    assert [o["metadata"]["name"] for o in store.sweep(listed, 100)] == ["gone", "gone-at-the-list"]
    assert sorted(k[1] for k in store.objects) == ["listed", "newer", "replaced", "reserved"]
    assert store.get(("ns", "replaced"))["metadata"]["uid"] == "new"  # type: ignore[index]
    assert store.sweep([], None) == [], "a list without a resourceVersion proves nothing gone"
    assert store.sweep([], "") == [] and store.sweep([], "garbage") == []


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.booleans()), max_size=30),
    st.integers(0, 30),
)
def test_after_a_sweep_every_object_is_listed_ours_or_newer(
    stored: list[tuple[int, int, bool]], list_rv: int
) -> None:
    store = Store()
    listed = []
    for n, rv, in_list in stored:
        obj = _listed(f"o{n}", rv)
        store.upsert(obj)
        if in_list:
            listed.append(obj)
    before = {key: obj["metadata"]["resourceVersion"] for key, obj in store.objects.items()}
    swept = {key_of(o) for o in store.sweep(listed, list_rv)}
    names = {key_of(o) for o in listed}
    for key, rv in before.items():
        kept = key in names or rv == "0" or int(rv) > list_rv
        assert (key in store.objects) is kept and (key in swept) is not kept


def test_an_object_of_another_owner_under_a_planned_name_is_waited_for_or_named() -> None:
    """Pod names follow the GPUs, so a pod an earlier deployment of that name left, or an orphan,
    can have the name a plan wants: the first is waited for, the second is the reason nothing is
    made (creating it would fail with 409 for ever)."""
    from gpupin.controller.decide import Actions
    from gpupin.controller.writes import namesakes

    cache = ClusterCache()
    body = {"metadata": {"name": "chat", "namespace": "ns", "uid": "uid-now"}}
    planned = {"kind": "Pod", "metadata": {"name": "chat-abc123", "namespace": "ns"}}
    orphan = {
        "kind": "Pod",
        "metadata": {"name": "chat-abc123", "namespace": "ns", "uid": "p1", "resourceVersion": "5"},
    }
    cache.pods.upsert(orphan)
    actions = Actions(create=[planned])
    why = namesakes(body, actions, lambda _obj: cache.pods)
    assert why is not None and "Pod chat-abc123 exists and is not this deployment's: delete it" in why
    leaving = {**orphan, "metadata": {**orphan["metadata"], "resourceVersion": "6", "deletionTimestamp": "x"}}
    cache.pods.upsert(leaving)
    actions = Actions(create=[planned])
    assert namesakes(body, actions, lambda _obj: cache.pods) is None
    assert actions.create == [] and actions.waiting, "a pod on its way out is waited for"
    earlier = {  # a Service an earlier deployment of this name left, not collected yet
        "kind": "Service",
        "metadata": {
            "name": "chat",
            "namespace": "ns",
            "uid": "s1",
            "resourceVersion": "7",
            "ownerReferences": [
                {"kind": "LLMDeployment", "name": "chat", "uid": "uid-before", "controller": True}
            ],
        },
    }
    cache.services.upsert(earlier)
    actions = Actions(create=[{"kind": "Service", "metadata": {"name": "chat", "namespace": "ns"}}])
    assert namesakes(body, actions, lambda _obj: cache.services) is None and actions.waiting


def test_a_router_object_whose_name_is_taken_is_left_out_not_the_plan() -> None:
    """The router's Service is named after the deployment: another deployment's per-model Service
    can have that name (``chat`` serving ``bot`` owns ``chat-bot``). Then only the endpoint is not
    made: the deployment's pods are still planned, and nothing waits for a name that stays taken."""
    from gpupin.controller.decide import Actions
    from gpupin.controller.writes import namesakes

    cache = ClusterCache()
    body = {"metadata": {"name": "chat-bot", "namespace": "ns", "uid": "uid-now"}}
    other = {
        "kind": "Service",
        "metadata": {"name": "chat-bot", "namespace": "ns", "uid": "s1", "resourceVersion": "5",
                     "ownerReferences": [{"kind": "LLMDeployment", "name": "chat", "uid": "uid-chat"}]},
    }  # fmt: skip
    cache.services.upsert(other)
    router = {"kind": "Service", "metadata": {"name": "chat-bot", "namespace": "ns",
                                               "labels": {"app.kubernetes.io/component": "router"}}}  # fmt: skip
    pod = {"kind": "Pod", "metadata": {"name": "chat-bot-abc123", "namespace": "ns"}}
    actions = Actions(create=[pod, router])
    assert (
        namesakes(body, actions, lambda obj: cache.services if obj["kind"] == "Service" else cache.pods)
        is None
    )
    assert actions.create == [pod] and not actions.waiting
