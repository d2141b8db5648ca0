"""Deterministic, DNS-valid names for the objects gpupin creates.

A pod's name is derived from its deployment and the GPUs it holds, so the same
placement always has the same name: a restarted operator finds the pod it made
instead of making a second one, and a replaced pod comes back under its old name.

Within a namespace, pod names never meet by construction (but for a 6-hex-digit hash collision):
the deployment's name leads, kept whole where it is a DNS label of at most 56 characters without
``--``; any other name (``a.b``, ``1st``, ``a--b``, one cut to fit) adds a hash of the original,
so ``a.b`` and ``a-b`` on one GPU set differ. Service names are today's: a vLLM Service is named
like its deployment, an Ollama model's Service ``<deployment>-<model>`` (:func:`model_service_names`);
two models of one deployment always get two names. A Service name may still equal one of another
deployment (vLLM ``chat-mistral`` and Ollama ``chat`` serving ``mistral``): the operator reports
that on the deployment that asks for the taken name (``Placed=False PodRejected``, naming the
Service) and never touches the other's Service.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from gpupin import constants

LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
"""A label key: an optional DNS-subdomain prefix and ``/``, then a name of at most 63 characters."""
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
"""A label value: empty, or at most 63 letters, digits, ``-``, ``_`` and ``.``, alphanumeric at both ends."""
MAX_NAME = 63  # a DNS label: pod hostnames and Service names
HASH_LEN = 6
_KEY = "\0"
"""Between the texts a hash covers (no name, model or GPU UUID holds it)."""


def short_hash(text: str, length: int = HASH_LEN) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_label(text: str, max_len: int = MAX_NAME) -> str:
    """Lowercase, ``[a-z0-9-]``, starting with a letter (DNS-1035, as Services require), at most
    ``max_len`` characters; runs of ``-`` collapse to one. Lossy: compare with ``text`` to know."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-{2,}", "-", label).strip("-")
    if not label or not label[0].isalpha():
        label = "x-" + label
    return label[:max_len].rstrip("-")


def _with_suffix(base: str, suffix: str) -> str:
    return f"{dns_label(base, MAX_NAME - len(suffix) - 1)}-{suffix}"


def pod_name(deployment: str, gpu_uuids: Iterable[str]) -> str:
    """``chat-3f2a1c``: the deployment's name and a hash of the GPU set the pod holds.

    Where the deployment's name is not kept whole (not a DNS label of at most 56 characters, or
    with ``--``), the hash covers the name too: ``a.b`` and ``a-b`` on one GPU set differ."""
    gpus = ",".join(sorted(gpu_uuids))
    base = dns_label(deployment, MAX_NAME - HASH_LEN - 1)
    if base == deployment:
        return f"{base}-{short_hash(gpus)}"
    return f"{base}-{short_hash(_KEY.join((deployment, gpus)))}"


def model_slug(model: str) -> str:
    """``qwen2.5:14b`` → ``qwen2-5-14b``: readable, for Service names (lossy: ``alice/mistral`` →
    ``mistral``)."""
    return dns_label(model.rsplit("/", 1)[-1] if "/" in model and ":" not in model else model, 40)


def model_service_names(deployment: str, models: Sequence[str]) -> dict[str, str]:
    """One Service name per Ollama model of ``deployment``: model → name, in the order of ``models``.

    Today's name where no other model of the deployment has it (:func:`_todays_service_name`:
    ``chat-qwen2-5-14b``), or where the model is the one whose slug is its name (``mistral`` beside
    ``alice/mistral``). Other models whose names meet there (``alice/mistral`` and ``bob/mistral``
    both ``chat-mistral``) each take ``chat-mistral-1a2b3c``, a hash of (deployment, model),
    re-hashed while that name is taken by another model of the deployment — so distinct models
    always get distinct names, whatever the hash. Depends only on the deployment's name and the
    set of its models (not their order); a model listed twice gets one name."""
    todays = {model: _todays_service_name(deployment, model) for model in models}
    shared = Counter(todays.values())
    # a model whose slug is its own name (``mistral``) keeps today's name beside lossy ones that
    # meet it there (``alice/mistral``, ``Mistral``): adding those renames no Service that worked
    whole = Counter(name for model, name in todays.items() if model_slug(model) == model)
    names = {
        model: name
        for model, name in todays.items()
        if shared[name] == 1 or (whole[name] == 1 and model_slug(model) == model)
    }
    taken = set(names.values())
    for model in sorted(model for model in todays if model not in names):
        attempt = 0
        name = _hashed_service_name(deployment, model, attempt)
        while name in taken:
            attempt += 1
            name = _hashed_service_name(deployment, model, attempt)
        names[model] = name
        taken.add(name)
    return {model: names[model] for model in todays}


def _todays_service_name(deployment: str, model: str) -> str:
    """``chat-qwen2-5-14b`` where that is a DNS label, else hashed (as every release named it)."""
    candidate = f"{deployment}-{model_slug(model)}"
    if dns_label(candidate) == candidate:
        return candidate
    return _hashed_service_name(deployment, model, 0)


def _hashed_service_name(deployment: str, model: str, attempt: int) -> str:
    """``chat-mistral-1a2b3c``: a hash of (deployment, model), and of ``attempt`` after the first."""
    key = _KEY.join((deployment, model, *([str(attempt)] if attempt else [])))
    return _with_suffix(f"{deployment}-{model_slug(model)}", short_hash(key))


def deployment_service_name(deployment: str) -> str:
    """One Service per vLLM deployment, named like it when that is a valid Service name."""
    name = dns_label(deployment)
    if name == deployment:
        return name
    return _with_suffix(deployment, short_hash(deployment))


def model_label_key(model: str) -> str:
    """``model.gpupin.dev/qwen2.5-14b-1a2b3c``: a valid label key per model (name part ≤ 63 characters)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-._")[:50].rstrip("-._")
    return f"{constants.MODEL_LABEL_PREFIX}{slug}-{short_hash(model)}"


def gpu_label_key(uuid: str) -> str:
    """``gpu.gpupin.dev/GPU-…``: the label a pod carries for each GPU it holds."""
    return constants.GPU_LABEL_PREFIX + re.sub(r"[^A-Za-z0-9._-]+", "-", uuid)[:63].strip("-._")


def label_value(text: str) -> str:
    """A label value (≤ 63 characters) for a name that may be longer; hashed when cut."""
    if len(text) <= MAX_NAME:
        return text
    return f"{text[: MAX_NAME - HASH_LEN - 1].rstrip('-._')}-{short_hash(text)}"
