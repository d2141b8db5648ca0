"""The cluster admin's policy: what an LLMDeployment may make the operator put into its pods.

Pure: no kopf, no kubernetes, no I/O. A user who may create LLMDeployments gets pods made by the
operator, with the operator's rights: any image, any Secret or ConfigMap of the namespace through
``spec.env``, any claim or StorageClass through ``spec.storage``. The operator's flags (see
:mod:`gpupin.controller.config`) narrow that; :func:`problems` is the one rule, and returns every
field a spec uses that the policy does not allow, each with the flag that says so. The planner
refuses such a spec (``Placed=False``, reason ``PolicyRefused``): no pod is made, and pods an
earlier spec or an earlier policy made keep serving (a refusal is a state, not a teardown).

Images (``--allowed-images``): each entry is an image reference or a prefix of one; the spec's
image is allowed when its normalized reference starts with an entry's normalized form *at a
boundary*: the entry ends in ``/``, ``:`` or ``@``, or the reference goes on with one of them (or
ends). Normalized as the container runtime reads references:

- a reference whose first component has no ``.`` or ``:`` and is not ``localhost`` has no
  registry: it is on Docker Hub, ``docker.io`` (``index.docker.io`` is ``docker.io`` too), and a
  Docker Hub name without ``/`` is in ``library/`` — ``ollama`` is ``docker.io/library/ollama``,
  ``vllm/vllm-openai`` is ``docker.io/vllm/vllm-openai``, ``evil.io/vllm/vllm-openai`` is not it;
- an image without tag or digest is ``:latest``; an image with a tag and a digest is pulled by the
  digest alone, so it is matched without the tag (``:0.17.4@sha256:…`` is not ``:0.17.4``).

So ``ollama/ollama`` allows every tag and digest of that repository (and paths below it),
``vllm/vllm-openai:`` every tag but no bare digest, ``ollama/ollama@sha256:`` only digest-pinned
references, ``registry.example/llm/`` everything under that path. An entry that is a bare host
(``quay.io``) is an error: write ``quay.io/`` (the registry) or ``quay.io/org/name``. The
operator's own engine images (``--ollama-image``, ``--vllm-image``) are always allowed, and a spec
without an image uses them.

Env (``spec.env[].valueFrom``): ``secretKeyRef`` is refused with ``--no-allow-env-from-secrets``,
``configMapKeyRef`` with ``--no-allow-env-from-config-maps``. ``fieldRef`` and
``resourceFieldRef`` read the pod's own metadata and resources, ``fileKeyRef`` a file of the pod's
own volumes: nothing the user could not see, so always allowed. A source this list does not know (a
later Kubernetes) is refused while Secrets are: it might read what the user cannot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gpupin.api.v1alpha1 import LLMDeploymentSpec

DOCKER_HUB = "docker.io"
_LEGACY_DOCKER_HUB = "index.docker.io"
_BOUNDARY = "/:@"
OWN_SOURCES = frozenset({"fieldRef", "resourceFieldRef", "fileKeyRef"})
"""EnvVarSources that read only the pod's own data: allowed whatever the policy."""


@dataclass(frozen=True)
class Policy:
    """The admin's knobs (operator flags). The defaults allow what gpupin always allowed, except
    that Ollama pods of different namespaces do not share a GPU."""

    allowed_images: tuple[str, ...] = ()
    """Image references or prefixes (as written in the flag); empty: any image."""
    own_images: tuple[str, ...] = ()
    """The operator's engine images: always allowed."""
    allow_env_from_secrets: bool = True
    allow_env_from_config_maps: bool = True
    allow_existing_claims: bool = True
    allow_storage_classes: bool = True
    allowed_storage_classes: tuple[str, ...] = ()
    """StorageClass names ``spec.storage.storageClassName`` may name; empty: any."""
    cross_namespace_sharing: bool = False
    """Ollama pods of different namespaces may share a GPU (the planner reads it)."""

    def __post_init__(self) -> None:
        for entry in self.allowed_images:
            normalize_prefix(entry)  # raises ValueError naming the entry


DEFAULT_POLICY = Policy()
"""What gpupin allows when the admin sets nothing (``gpupin plan`` plans with it)."""


@dataclass(frozen=True)
class Problem:
    """A field of the spec the policy does not allow."""

    field: str
    """``spec.image``, ``spec.env[2].valueFrom.secretKeyRef``, …"""
    message: str
    """What is not allowed and the operator flag that says so."""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _split_registry(reference: str) -> tuple[str | None, str]:
    """(registry or None for Docker Hub, the rest), as the container runtime splits a reference."""
    first, slash, rest = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        host = first.lower()
        return (DOCKER_HUB if host == _LEGACY_DOCKER_HUB else host), rest
    return None, reference


def _with_registry(registry: str | None, rest: str) -> str:
    registry = registry or DOCKER_HUB
    if registry == DOCKER_HUB:
        path = re.split(r"[:@]", rest, maxsplit=1)[0]
        if path and "/" not in path:
            rest = f"library/{rest}"
    return f"{registry}/{rest}"


def normalize_image(reference: str) -> str:
    """An image reference as the runtime pulls it: ``ollama/ollama`` →
    ``docker.io/ollama/ollama:latest``; ``x:1@sha256:…`` → ``docker.io/library/x@sha256:…``."""
    name, at, digest = reference.strip().partition("@")
    registry, rest = _split_registry(name)
    last = rest.rsplit("/", 1)[-1]
    if at:
        rest = rest[: len(rest) - len(last)] + last.split(":", 1)[0]  # pulled by digest: the tag is ignored
        return _with_registry(registry, rest) + "@" + digest
    if ":" not in last:
        rest += ":latest"
    return _with_registry(registry, rest)


def normalize_prefix(entry: str) -> str:
    """An ``--allowed-images`` entry normalized like an image but not completed (no ``:latest``).
    Raises ValueError for an empty entry or a bare host (``quay.io``: a registry needs its ``/``)."""
    text = entry.strip()
    if not text:
        raise ValueError("--allowed-images: an entry is empty")
    first = text.split("/", 1)[0]
    if "/" not in text and ("." in first.split(":", 1)[0] or first.split(":", 1)[0] == "localhost"):
        raise ValueError(
            f"--allowed-images {entry!r}: a registry is written with its slash ({first.split(':', 1)[0]}/…) "
            "or as a repository (registry/org/name); a name without a slash is a Docker Hub image"
        )
    registry, rest = _split_registry(text)
    return _with_registry(registry, rest)


def image_allowed(image: str, policy: Policy) -> bool:
    """Is ``image`` (a spec's) allowed? The operator's own images and any image when the list is empty."""
    if not policy.allowed_images:
        return True
    reference = normalize_image(image)
    if reference in {normalize_image(own) for own in policy.own_images}:
        return True
    for entry in policy.allowed_images:
        prefix = normalize_prefix(entry)
        if reference == prefix or (
            reference.startswith(prefix) and (prefix[-1] in _BOUNDARY or reference[len(prefix)] in _BOUNDARY)
        ):
            return True
    return False


def problems(spec: LLMDeploymentSpec, policy: Policy) -> list[Problem]:
    """Every field of ``spec`` the policy does not allow, in the spec's order (empty: allowed)."""
    found: list[Problem] = []
    if spec.image is not None and not image_allowed(spec.image, policy):
        found.append(
            Problem(
                "spec.image",
                f"{spec.image} is not an image this cluster allows (operator flag --allowed-images: "
                f"{', '.join(policy.allowed_images)}; leave image unset for the operator's own)",
            )
        )
    for i, var in enumerate(spec.env):
        for source, ref in (var.value_from or {}).items():
            why = _env_source_problem(source, ref, policy)
            if why:
                found.append(Problem(f"spec.env[{i}].valueFrom.{source}", f"{var.name} {why}"))
    storage = spec.storage
    if storage is not None and storage.existing_claim is not None and not policy.allow_existing_claims:
        found.append(
            Problem(
                "spec.storage.existingClaim",
                f"mounting claim {storage.existing_claim} is off (operator flag --no-allow-existing-claims); "
                "leave storage unset for a cache of the pod's own",
            )
        )
    if storage is not None and storage.storage_class_name is not None:
        if not policy.allow_storage_classes:
            found.append(
                Problem(
                    "spec.storage.storageClassName",
                    f"claims of StorageClass {storage.storage_class_name} are off (operator flag "
                    "--no-allow-storage-classes); set only storage.size for a size-limited cache",
                )
            )
        elif (
            policy.allowed_storage_classes
            and storage.storage_class_name not in policy.allowed_storage_classes
        ):
            found.append(
                Problem(
                    "spec.storage.storageClassName",
                    f"{storage.storage_class_name} is not a StorageClass this cluster allows (operator flag "
                    f"--allowed-storage-classes: {', '.join(policy.allowed_storage_classes)})",
                )
            )
    return found


def _env_source_problem(source: str, ref: object, policy: Policy) -> str | None:
    """Why an env var may not read from this EnvVarSource (None: it may)."""
    name = ref.get("name") if isinstance(ref, dict) else None
    if source == "secretKeyRef":
        if policy.allow_env_from_secrets:
            return None
        return f"reads Secret {name}: env from Secrets is off (operator flag --no-allow-env-from-secrets)"
    if source == "configMapKeyRef":
        if policy.allow_env_from_config_maps:
            return None
        return f"reads ConfigMap {name}: env from ConfigMaps is off (operator flag --no-allow-env-from-config-maps)"
    if source in OWN_SOURCES or policy.allow_env_from_secrets:
        return None
    return (
        f"reads from {source}, a source gpupin does not know (it may read what you cannot): refused while env "
        "from Secrets is off (operator flag --no-allow-env-from-secrets)"
    )


def refusal_message(found: Sequence[Problem]) -> str:
    """The Placed=False message for a spec the policy refuses."""
    return (
        "the cluster's policy refuses "
        + "; ".join(str(p) for p in found)
        + ". Change the spec, or ask the cluster admin (these are the operator's flags)"
    )
