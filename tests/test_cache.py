"""The operator's watch-fed cache: the per-owner pod index and holds stay equal to a full scan.

Aspects: pods_of and holds(only=…) read an index kept by the pod store's change hook; after any
sequence of upserts, removals and deletions marked by the operator, they match what scanning every
pod gives; every change marks its owner dirty for the reconciler's planner.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gpupin import constants
from gpupin.controller.cache import ClusterCache, key_of


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
                {"kind": constants.KIND, "name": owner, "controller": True, "uid": f"o-{owner}"}
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
