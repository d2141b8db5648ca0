"""Deterministic, DNS-valid names for the objects gpupin creates.

A pod's name is derived from its deployment and the GPUs it holds, so the same
placement always has the same name: a restarted operator finds the pod it made
instead of making a second one, and a replaced pod comes back under its old name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from gpupin import constants

MAX_NAME = 63  # a DNS label: pod hostnames and Service names
HASH_LEN = 6


def short_hash(text: str, length: int = HASH_LEN) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_label(text: str, max_len: int = MAX_NAME) -> str:
    """Lowercase, ``[a-z0-9-]``, starting with a letter (DNS-1035, as Services require)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-{2,}", "-", label).strip("-")
    if not label or not label[0].isalpha():
        label = "x-" + label
    return label[:max_len].rstrip("-")


def _with_suffix(base: str, suffix: str) -> str:
    return f"{dns_label(base, MAX_NAME - len(suffix) - 1)}-{suffix}"


def pod_name(deployment: str, gpu_uuids: Iterable[str]) -> str:
    """``chat-3f2a1c``: the deployment's name and a hash of the GPU set the pod holds."""
    return _with_suffix(deployment, short_hash(",".join(sorted(gpu_uuids))))


def model_slug(model: str) -> str:
    """``qwen2.5:14b`` → ``qwen2-5-14b``: readable, for Service names and labels."""
    return dns_label(model.rsplit("/", 1)[-1] if "/" in model and ":" not in model else model, 40)


def model_service_name(deployment: str, model: str) -> str:
    """One Service per Ollama model: ``chat-qwen2-5-14b``, hashed when it would not fit."""
    candidate = f"{deployment}-{model_slug(model)}"
    if dns_label(candidate) == candidate:
        return candidate
    return _with_suffix(candidate, short_hash(f"{deployment}\0{model}"))


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
