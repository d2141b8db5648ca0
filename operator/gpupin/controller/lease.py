"""One writer at a time: the operator holds a ``coordination.k8s.io`` Lease before its first write.

Two operator processes allocating at once would book one GPU twice: an eviction that starts the
new pod before the old one has stopped, a node cut off from the API server whose operator keeps
running. So ``gpupin operator`` takes the Lease ``gpupin-operator`` in its own namespace before
kopf starts — a standby neither watches nor writes, it waits — and then:

- renews it every ``retry`` seconds. When it has not renewed for ``renew_deadline`` seconds it has
  lost the Lease: writes stop at once (:meth:`LeaderLease.write_budget` gates every write of
  :class:`gpupin.kube.Kube`, and cuts its timeout to end before the Lease could pass to another),
  the process stops (exit 4), and its pod restarts as a standby;
- releases it on shutdown (the holder emptied), so a standby takes over within ``retry`` seconds
  instead of waiting out ``duration``.

A standby takes a Lease whose holder has not renewed it for ``duration`` seconds, measured on its
own clock from when it last saw the Lease change (as client-go's leader election does: clocks of
different nodes are never compared). ``renew_deadline`` < ``duration`` leaves the old holder
time to stop writing before anyone else may start. Timings are client-go's defaults scaled from
one setting (15 s: 10 s deadline, 2 s retry).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from gpupin.api.v1alpha1 import DNS_LABEL_PATTERN, OBJECT_NAME_PATTERN
from gpupin.controller import metrics
from gpupin.controller.admin import env_bool
from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.lease")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
NAMESPACE_RE = re.compile(DNS_LABEL_PATTERN)
"""A namespace name (a DNS label); length is checked beside it."""

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _own_namespace(env: Mapping[str, str]) -> str:
    """The operator pod's namespace: POD_NAMESPACE (the chart sets it), else its service
    account's, else ``default`` (outside a cluster)."""
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as found:
            return found.read().strip() or "default"
    except OSError:
        return "default"


def add_arguments(parser: argparse.ArgumentParser, ENV: Mapping[str, str]) -> None:
    """`gpupin operator`'s Lease flags (``ENV``: each setting's environment variable)."""
    env = os.environ
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,  # not given: the environment variable, read (and checked) in from_arguments
        help="hold a coordination.k8s.io Lease before the first write, so that of several operators only "
        "one writes (a second replica waits as a standby); --no-leader-election only where one process "
        f"is certain (env {ENV['leader_election']}; default true)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=env.get(ENV["lease_namespace"]) or _own_namespace(env),
        help=f"namespace of the Lease (env {ENV['lease_namespace']}; default the pod's own, POD_NAMESPACE or "
        "its service account's, else default)",
    )
    parser.add_argument(
        "--lease-name",
        default=env.get(ENV["lease_name"], "gpupin-operator"),
        help=f"name of the Lease (env {ENV['lease_name']}; default %(default)s)",
    )
    parser.add_argument(
        "--lease-duration",
        dest="lease_duration_seconds",
        type=float,
        default=env.get(ENV["lease_duration_seconds"], "15"),
        help="seconds the Lease lasts unrenewed: a standby takes over this long after a holder dies "
        f"(at once when it stops cleanly) (env {ENV['lease_duration_seconds']}; default 15)",
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Lease settings from the arguments, checked: ValueError naming the flag."""
    if not args.lease_duration_seconds >= 1:  # NaN too
        raise ValueError("--lease-duration must be at least 1 (seconds)")
    if len(args.lease_namespace) > 63 or not NAMESPACE_RE.match(args.lease_namespace):
        raise ValueError(f"--lease-namespace {args.lease_namespace!r}: not a namespace name")
    if len(args.lease_name) > 253 or not re.fullmatch(OBJECT_NAME_PATTERN, args.lease_name):
        raise ValueError(
            f"--lease-name {args.lease_name!r}: not an object name (lowercase letters, digits, '-', '.')"
        )
    given = args.leader_election
    return {
        "leader_election": given if given is not None else env_bool("GPUPIN_LEADER_ELECTION", True),
        "lease_namespace": args.lease_namespace,
        "lease_name": args.lease_name,
        "lease_duration_seconds": args.lease_duration_seconds,
    }


@dataclass(frozen=True)
class LeaseTiming:
    """Seconds: how long a Lease lasts unrenewed, how long its holder keeps writing without
    renewing, how often both holder and standby try."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    @classmethod
    def scaled(cls, duration: float) -> LeaseTiming:
        """client-go's proportions (15 / 10 / 2) for another ``duration``."""
        return cls(duration, duration * 2 / 3, max(0.2, duration * 2 / 15))


class LeaseLost(Exception):
    """The API server refused the Lease for good (no rights on it): the operator cannot run."""


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderLease:
    """The operator's Lease ``namespace/name``, held as ``identity`` (the pod's name)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming = LeaseTiming(),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.timing, self.clock, self.wall = timing, clock, wall
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewed_at: float | None = None
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self._told: str | None = None
        self._thread: threading.Thread | None = None
        metrics.LEASE_HOLDER.labels(identity=identity).set(0)  # a standby's series says so

    @property
    def path(self) -> str:
        return f"{LEASES.format(namespace=self.namespace)}/{self.name}"

    def holding(self) -> bool:
        """True while this process may write: it renewed the Lease within the renew deadline."""
        renewed = self._renewed_at
        return (
            renewed is not None
            and not self.lost.is_set()
            and self.clock() - renewed < self.timing.renew_deadline
        )

    def write_budget(self) -> float:
        """Seconds this process may still write: until the renew deadline it may send, and what it
        sends must be answered before anyone else may take the Lease (the last renewal plus its
        duration); 0 once it may not (the gate of :class:`gpupin.kube.Kube`)."""
        renewed = self._renewed_at
        if renewed is None or not self.holding():
            return 0.0
        return renewed + self.timing.duration - self.clock()

    @property
    def _timeout(self) -> float:
        """A Lease request waits at most half the renew deadline: a slow answer is a failed try."""
        return max(0.5, self.timing.renew_deadline / 2)

    def holder(self) -> str | None:
        """Who holds the Lease as last seen (None: nobody)."""
        return self._seen[0] if self._seen else None

    # -- one try -----------------------------------------------------------------------

    def try_hold(self) -> bool:
        """Take or renew the Lease once: True when this process holds it now. Raises
        :class:`LeaseLost` when the API server forbids it; other failures are False."""
        now = self.clock()  # a renewal counts from before it was sent: the holder's side errs early
        try:
            lease = self.kube.request("GET", self.path, timeout=self._timeout)
        except ApiError as exc:
            if exc.status == 404:
                return self._write("POST", LEASES.format(namespace=self.namespace), None, now)
            return self._failed(exc)
        observed = self.clock()  # a change counts from when it was seen: the standby's side errs late
        spec = lease.get("spec") or {}
        seen = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if seen != self._seen:
            self._seen, self._seen_at = seen, observed
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.timing.duration)
        if holder and holder != self.identity and observed - self._seen_at < duration:
            if self._told != holder:
                self._told = holder
                log.info(
                    "Waiting for the operator Lease", lease=f"{self.namespace}/{self.name}", holder=holder
                )
            return False
        return self._write("PUT", self.path, lease, now)

    def _write(self, method: str, path: str, lease: dict[str, Any] | None, now: float) -> bool:
        spec = (lease or {}).get("spec") or {}
        moment = _micro_time(self.wall())
        ours = spec.get("holderIdentity") == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours or lease is None else 1)
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                **({"resourceVersion": lease["metadata"]["resourceVersion"]} if lease else {}),
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, math.ceil(self.timing.duration)),
                "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else moment,
                "renewTime": moment,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0)
                + (0 if ours or lease is None else 1),
            },
        }
        try:
            self.kube.request(method, path, body, timeout=self._timeout)
        except ApiError as exc:
            return self._failed(exc)
        if self._renewed_at is None or not ours:
            log.info(
                "Holding the operator Lease", lease=f"{self.namespace}/{self.name}", identity=self.identity
            )
        self._renewed_at = now
        metrics.LEASE_HOLDER.labels(identity=self.identity).set(1)
        self._seen, self._seen_at = (self.identity, moment, transitions), now
        self._told = None
        return True

    def _failed(self, exc: ApiError) -> bool:
        if exc.status in (401, 403):
            raise LeaseLost(
                f"the API server refuses Lease {self.namespace}/{self.name} ({exc.status} {exc.reason}): "
                "the operator needs get, create and update on leases (coordination.k8s.io) in that "
                "namespace (the chart grants them)"
            ) from None
        if exc.status != 409:  # 409: someone else wrote it first; the next try reads theirs
            log.warning("Could not read or write the operator Lease", lease=f"{self.namespace}/{self.name}",
                        error=str(exc))  # fmt: skip
        return False

    # -- the process's life --------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Wait until this process holds the Lease (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            try:
                held = self.try_hold()
            except LeaseLost:
                raise
            except Exception:  # the API server unreachable at start: wait, as for a held Lease
                log.exception("Could not read the operator Lease", lease=f"{self.namespace}/{self.name}")
                held = False
            if held and stop.is_set():  # stopped while winning it: give it straight back
                self.release()
                return False
            if held:
                return True
            stop.wait(self.timing.retry)
        return False

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew in a thread until :meth:`release`; when the renew deadline passes without a
        renewal, or another holder has it, set :attr:`lost` and call ``on_lost`` once."""

        def renew() -> None:
            while not self._stop.wait(self.timing.retry):
                try:
                    held = self.try_hold()
                except LeaseLost as exc:
                    log.error(str(exc))
                    held = False
                except Exception:  # whatever failed, it was not a renewal; the deadline decides
                    log.exception("Could not renew the operator Lease", lease=f"{self.namespace}/{self.name}")
                    held = False
                if held:
                    continue
                taken = self.holder() not in (None, self.identity)
                if taken or not self.holding():
                    self.lost.set()
                    metrics.LEASE_HOLDER.labels(identity=self.identity).set(0)
                    log.error(
                        "Lost the operator Lease: stopping, writes stopped (the pod restarts as a standby)",
                        lease=f"{self.namespace}/{self.name}",
                        holder=self.holder(),
                    )
                    on_lost()
                    return

        self._thread = threading.Thread(target=renew, name="gpupin-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and, if this process still holds the Lease, give it up (holder emptied)
        so a standby takes it at its next try."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.retry + 35)
        if not self.holding():
            return
        self._renewed_at = None
        metrics.LEASE_HOLDER.labels(identity=self.identity).set(0)
        try:
            lease = self.kube.request("GET", self.path)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "renewTime": _micro_time(self.wall()),
                "leaseDurationSeconds": 1,
            }
            self.kube.request("PUT", self.path, lease)
            log.info("Released the operator Lease", lease=f"{self.namespace}/{self.name}")
        except ApiError as exc:
            log.warning("Could not release the operator Lease; a standby takes it when it expires",
                        lease=f"{self.namespace}/{self.name}", error=str(exc))  # fmt: skip
