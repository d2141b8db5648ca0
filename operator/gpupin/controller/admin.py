"""The cluster admin's knobs as operator flags with environment twins: what an LLMDeployment may ask
of the operator (:mod:`gpupin.policy`), the pods' default model cache limit and their NetworkPolicy.

Every flag defaults to its ``GPUPIN_*`` variable, then to the built-in default; a bad value is a
ValueError naming the flag or the variable (``gpupin operator`` prints it on one line). The
defaults keep what gpupin always did, except that Ollama pods of different namespaces share no GPU
and a pod's model cache emptyDir has a size limit sized from its models.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from gpupin.httproute import parse_gateway
from gpupin.policy import Policy
from gpupin.quantity import parse_bytes
from gpupin.render import NETWORK_POLICY_MODES, RenderConfig, parse_namespace_selector
from gpupin.routerobjects import parse_router_pod

_DEFAULTS = RenderConfig()

ENV = {
    "allowed_images": "GPUPIN_ALLOWED_IMAGES",
    "allow_env_from_secrets": "GPUPIN_ALLOW_ENV_FROM_SECRETS",
    "allow_env_from_config_maps": "GPUPIN_ALLOW_ENV_FROM_CONFIG_MAPS",
    "allow_existing_claims": "GPUPIN_ALLOW_EXISTING_CLAIMS",
    "allow_storage_classes": "GPUPIN_ALLOW_STORAGE_CLASSES",
    "allowed_storage_classes": "GPUPIN_ALLOWED_STORAGE_CLASSES",
    "allow_cross_namespace_sharing": "GPUPIN_ALLOW_CROSS_NAMESPACE_SHARING",
    "default_cache_size": "GPUPIN_DEFAULT_CACHE_SIZE",
    "network_policy": "GPUPIN_NETWORK_POLICY",
    "network_policy_namespaces": "GPUPIN_NETWORK_POLICY_NAMESPACES",
    "router_image": "GPUPIN_ROUTER_IMAGE",
    "gateway": "GPUPIN_GATEWAY",
    "router_pod": "GPUPIN_ROUTER_POD",
}

_SWITCHES = {  # flag → (setting, default, what it allows): booleans whose env twin reads true/false
    "--allow-env-from-secrets": ("allow_env_from_secrets", True, "spec.env valueFrom.secretKeyRef"),
    "--allow-env-from-config-maps": (
        "allow_env_from_config_maps",
        True,
        "spec.env valueFrom.configMapKeyRef",
    ),
    "--allow-existing-claims": ("allow_existing_claims", True, "spec.storage.existingClaim"),
    "--allow-storage-classes": ("allow_storage_classes", True, "spec.storage.storageClassName"),
    "--allow-cross-namespace-sharing": (
        "allow_cross_namespace_sharing",
        False,
        "Ollama pods of different namespaces on one GPU",
    ),
}


def env_bool(name: str, default: bool) -> bool:
    """A true/false environment variable (unset or empty: ``default``); ValueError naming it otherwise."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster admin's knobs (:mod:`gpupin.policy`, and the pods' cache and network)."""
    env = os.environ
    parser.add_argument(
        "--allowed-images",
        action="append",
        default=_split(env.get(ENV["allowed_images"], "")),
        metavar="PREFIXES",
        help="image references or prefixes spec.image may use, e.g. registry.example/llm/,vllm/vllm-openai: "
        "(comma-separated, repeatable; a name without a registry is Docker Hub's; the operator's own images "
        f"are always allowed; env {ENV['allowed_images']}; default any image)",
    )
    for flag, (setting, default, what) in _SWITCHES.items():
        parser.add_argument(
            flag,
            dest=setting,
            action=argparse.BooleanOptionalAction,
            default=None,  # not given: the environment variable, read (and checked) in from_arguments
            help=f"allow {what} (env {ENV[setting]}=true|false; default {str(default).lower()})",
        )
    parser.add_argument(
        "--allowed-storage-classes",
        action="append",
        default=_split(env.get(ENV["allowed_storage_classes"], "")),
        metavar="NAMES",
        help="StorageClasses spec.storage.storageClassName may name (comma-separated, repeatable; "
        f"env {ENV['allowed_storage_classes']}; default any)",
    )
    parser.add_argument(
        "--default-cache-size",
        default=env.get(ENV["default_cache_size"], _DEFAULTS.default_cache_size),
        help="sizeLimit of a pod's model cache emptyDir when spec.storage.size is unset: auto (twice the "
        "pod's models' estimate + 10Gi), none (no limit) or a size such as 200Gi "
        f"(env {ENV['default_cache_size']}; default %(default)s)",
    )
    parser.add_argument(
        "--network-policy",
        default=env.get(ENV["network_policy"], _DEFAULTS.network_policy),
        help="namespace: a NetworkPolicy per deployment admits only pods of its namespace to its pods' port "
        "(needs a network plugin that enforces them, and RBAC on networkpolicies); none: no NetworkPolicy, "
        "and gpupin does not touch ones it made before (delete them by label app.kubernetes.io/managed-by="
        f"gpupin) (env {ENV['network_policy']}; default %(default)s)",
    )
    parser.add_argument(
        "--network-policy-namespaces",
        default=env.get(ENV["network_policy_namespaces"], ""),
        metavar="LABELS",
        help="with --network-policy namespace, also admit pods of namespaces carrying all these labels: "
        "key=value or key, comma-separated (ANDed), e.g. kubernetes.io/metadata.name=ingress-nginx "
        f"(env {ENV['network_policy_namespaces']}; default none)",
    )
    parser.add_argument(
        "--router-image",
        default=env.get(ENV["router_image"], ""),
        metavar="IMAGE",
        help="gpupin's own image: each Ollama deployment then gets one endpoint, a Service named after it "
        "in front of a `gpupin router` Deployment that routes by the request's model (needs RBAC on "
        f"configmaps and deployments); empty: none (env {ENV['router_image']}; the chart sets it)",
    )
    parser.add_argument(
        "--router-pod",
        default=env.get(ENV["router_pod"], ""),
        metavar="JSON",
        help="every router pod's nodeSelector, tolerations, imagePullSecrets (which must exist in each "
        "deployment's namespace), priorityClassName and resources, as a JSON object; empty: none, and "
        f"requests of 50m CPU and 64Mi (env {ENV['router_pod']}; the chart sets it from operator.router)",
    )
    parser.add_argument(
        "--gateway",
        default=env.get(ENV["gateway"], ""),
        metavar="NAMESPACE/NAME",
        help="a Gateway API Gateway (NAME alone: in each deployment's namespace): each Ollama deployment then "
        "gets an HTTPRoute attached to it, one rule per model on the X-Gateway-Model-Name header that the "
        "Inference Extension's body-based router sets (needs RBAC on httproutes); empty: none "
        f"(env {ENV['gateway']})",
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The admin's knobs from the arguments (flags over environment), checked: ValueError naming the
    flag or variable for a bad value."""
    settings: dict[str, Any] = {}
    for setting, default, _ in _SWITCHES.values():
        given = getattr(args, setting, None)
        settings[setting] = given if given is not None else env_bool(ENV[setting], default)
    images = tuple(dict.fromkeys(p for value in args.allowed_images for p in _split(value)))
    Policy(allowed_images=images)  # a bare host or an empty entry: ValueError naming it
    settings["allowed_images"] = images
    settings["allowed_storage_classes"] = tuple(
        dict.fromkeys(p for value in args.allowed_storage_classes for p in _split(value))
    )
    size = str(args.default_cache_size).strip()
    if size not in ("auto", "none"):
        try:
            if parse_bytes(size) < 2**30:  # smaller evicts every pod once its first model lands
                raise ValueError(size)
        except ValueError:
            raise ValueError(
                f"--default-cache-size {size!r}: expected auto, none or a size of at least 1Gi such as 200Gi"
            ) from None
    settings["default_cache_size"] = size
    if args.network_policy not in NETWORK_POLICY_MODES:
        raise ValueError(
            f"--network-policy {args.network_policy!r}: expected {' or '.join(NETWORK_POLICY_MODES)}"
        )
    settings["network_policy"] = args.network_policy
    settings["network_policy_namespaces"] = parse_namespace_selector(args.network_policy_namespaces)
    image = str(getattr(args, "router_image", "") or "").strip()
    if any(c.isspace() for c in image):
        raise ValueError(f"--router-image {image!r}: expected an image reference without spaces")
    settings["router_image"] = image
    settings["router_pod"] = parse_router_pod(str(getattr(args, "router_pod", "") or ""))
    settings["gateway"] = parse_gateway(str(getattr(args, "gateway", "") or ""))
    return settings
