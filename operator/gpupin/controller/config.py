"""Operator configuration: flags and environment variables, with documented defaults."""

from __future__ import annotations

import argparse
import os
import pwd
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpupin.controller import admin, lease
from gpupin.engines import ENGINES
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.policy import Policy
from gpupin.render import NetworkPolicyMode, RenderConfig
from gpupin.routerobjects import RouterPod

_DEFAULTS = RenderConfig()
_OLLAMA_IMAGE = ENGINES.get("ollama").default_image
_VLLM_IMAGE = ENGINES.get("vllm").default_image


_NAMESPACE_RE = lease.NAMESPACE_RE


@dataclass(frozen=True)
class OperatorConfig:
    pinning: PinningModeName = "visible-devices"
    runtime_class_name: str | None = _DEFAULTS.runtime_class_name
    ollama_image: str = _OLLAMA_IMAGE
    vllm_image: str = _VLLM_IMAGE
    require_gpu: bool = _DEFAULTS.require_gpu
    """Ollama pods are Ready only when their models are wholly in GPU memory; False accepts CPU."""
    namespaces: tuple[str, ...] = ()
    """Namespaces whose LLMDeployments are served; empty: all (cluster-wide). When set, only these
    namespaces are listed and watched (the operator's RBAC may grant no more)."""
    resync_seconds: float = 600.0
    """Every deployment is reconciled at least this often, whatever the watches say."""
    relist_seconds: float = 300.0
    """gpupin's pods, Services, claim templates and the LLMDeployments are listed this often and
    the cache made to match (what a watch gap hid, deletions included); 0 disables."""
    gpu_loss_grace_seconds: float = 60.0
    """How long a GPU that a node's healthy inventory stopped reporting keeps its pods (seconds)
    before they are deleted and re-planned; an unreadable or missing inventory deletes nothing."""
    metrics_port: int = 8000
    """Prometheus /metrics; 0 disables."""
    health_port: int = 8080
    """kopf's liveness endpoint /healthz; 0 disables."""
    leader_election: bool = True
    """Hold the Lease below before the first write (one writer at a time; see :mod:`gpupin.controller.lease`)."""
    lease_namespace: str = "default"
    lease_name: str = "gpupin-operator"
    lease_duration_seconds: float = 15.0
    """How long the Lease lasts unrenewed; the holder stops writing after 2/3 of it without a renewal."""
    concurrency: int = 8
    """API writes of different deployments in flight at once (allocation itself is serial)."""
    max_concurrent_rollouts: int = 4
    """Deployments that replace their pods at once after an operator-wide change (an image, a flag,
    an upgrade of gpupin); a deployment whose own spec changed does not wait for a turn."""
    model_metadata: str = "online"
    """online: read unknown models' metadata from Hugging Face / the Ollama registry; offline: never."""
    model_data: tuple[str, ...] = ()
    """Files of model data (the bundled models.yaml's format; the chart mounts a ConfigMap)."""
    hf_endpoint: str | None = None
    ollama_registry: str | None = None
    # -- the cluster admin's knobs (see gpupin.policy): what a deployment may ask of the operator --
    allowed_images: tuple[str, ...] = ()
    """Image references or prefixes spec.image may use; empty: any (the operator's own always)."""
    allow_env_from_secrets: bool = True
    allow_env_from_config_maps: bool = True
    allow_existing_claims: bool = True
    allow_storage_classes: bool = True
    allowed_storage_classes: tuple[str, ...] = ()
    allow_cross_namespace_sharing: bool = False
    """Ollama pods of different namespaces may share a GPU."""
    default_cache_size: str = _DEFAULTS.default_cache_size
    """sizeLimit of the model cache emptyDir when spec.storage.size is unset: auto, none or a quantity."""
    network_policy: NetworkPolicyMode = _DEFAULTS.network_policy
    network_policy_namespaces: tuple[tuple[str, str | None], ...] = ()
    router_image: str = ""
    """gpupin's own image for the per-deployment router (:mod:`gpupin.routerobjects`); empty: none."""
    router_pod: RouterPod = field(default_factory=RouterPod)
    """Scheduling, pull secrets and resources of every router pod (``--router-pod``)."""
    gateway: tuple[str, str] | None = None
    """(namespace, name) of the Gateway the deployments' HTTPRoutes attach to; None: no HTTPRoute."""

    @property
    def render(self) -> RenderConfig:
        return RenderConfig(
            pinning=self.pinning,
            runtime_class_name=self.runtime_class_name,
            images=(("ollama", self.ollama_image), ("vllm", self.vllm_image)),
            require_gpu=self.require_gpu,
            default_cache_size=self.default_cache_size,
            network_policy=self.network_policy,
            network_policy_namespaces=self.network_policy_namespaces,
            router_image=self.router_image,
            router_pod=self.router_pod,
            gateway=self.gateway,
        )

    @property
    def policy(self) -> Policy:
        return Policy(
            allowed_images=self.allowed_images,
            own_images=(self.ollama_image, self.vllm_image),
            allow_env_from_secrets=self.allow_env_from_secrets,
            allow_env_from_config_maps=self.allow_env_from_config_maps,
            allow_existing_claims=self.allow_existing_claims,
            allow_storage_classes=self.allow_storage_classes,
            allowed_storage_classes=self.allowed_storage_classes,
            cross_namespace_sharing=self.allow_cross_namespace_sharing,
        )


ENV = {
    "pinning": "GPUPIN_PINNING",
    "runtime_class_name": "GPUPIN_RUNTIME_CLASS",
    "ollama_image": "GPUPIN_OLLAMA_IMAGE",
    "vllm_image": "GPUPIN_VLLM_IMAGE",
    "require_gpu": "GPUPIN_REQUIRE_GPU",
    "namespaces": "GPUPIN_NAMESPACES",
    "resync_seconds": "GPUPIN_RESYNC_SECONDS",
    "relist_seconds": "GPUPIN_RELIST_SECONDS",
    "gpu_loss_grace_seconds": "GPUPIN_GPU_LOSS_GRACE_SECONDS",
    "metrics_port": "GPUPIN_METRICS_PORT",
    "health_port": "GPUPIN_HEALTH_PORT",
    "leader_election": "GPUPIN_LEADER_ELECTION",
    "lease_namespace": "GPUPIN_LEASE_NAMESPACE",
    "lease_name": "GPUPIN_LEASE_NAME",
    "lease_duration_seconds": "GPUPIN_LEASE_DURATION",
    "concurrency": "GPUPIN_CONCURRENCY",
    "max_concurrent_rollouts": "GPUPIN_MAX_CONCURRENT_ROLLOUTS",
    "model_metadata": "GPUPIN_MODEL_METADATA",
    "model_data": "GPUPIN_MODEL_DATA",
    "hf_endpoint": "HF_ENDPOINT",
    "ollama_registry": "GPUPIN_OLLAMA_REGISTRY",
    **admin.ENV,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gpupin operator` flags; each defaults to its environment variable, then to the built-in default.
    Numeric defaults stay strings: argparse converts them with the flag's type, so a bad value in the
    environment is a one-line usage error naming the flag, not a traceback."""
    env = os.environ
    parser.add_argument(
        "--pinning",
        choices=PINNING_MODES,
        default=env.get(ENV["pinning"], "visible-devices"),
        help=f"how pods are pinned to GPUs (env {ENV['pinning']}; default visible-devices)",
    )
    parser.add_argument(
        "--runtime-class",
        default=env.get(ENV["runtime_class_name"], _DEFAULTS.runtime_class_name),
        help=f"runtimeClassName for visible-devices pinning, '' for none (env {ENV['runtime_class_name']}; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--ollama-image",
        default=env.get(ENV["ollama_image"], _OLLAMA_IMAGE),
        help=f"default Ollama image (env {ENV['ollama_image']}; default %(default)s)",
    )
    parser.add_argument(
        "--vllm-image",
        default=env.get(ENV["vllm_image"], _VLLM_IMAGE),
        help=f"default vLLM image (env {ENV['vllm_image']}; default %(default)s)",
    )
    parser.add_argument(
        "--require-gpu",
        action=argparse.BooleanOptionalAction,
        default=None,  # not given: the environment variable, read (and checked) in from_arguments
        help="an Ollama pod is Ready only when its models are wholly in GPU memory; --no-require-gpu "
        f"accepts models served from the CPU, for clusters without GPUs (env {ENV['require_gpu']}=false; "
        "default true)",
    )
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=[n for n in env.get(ENV["namespaces"], "").split(",") if n],
        help=f"serve LLMDeployments of this namespace (repeatable; env {ENV['namespaces']}, "
        "comma-separated; default all namespaces)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=env.get(ENV["resync_seconds"], "600"),
        help=f"reconcile every deployment at least this often (env {ENV['resync_seconds']}; default 600)",
    )
    parser.add_argument(
        "--relist-seconds",
        type=float,
        default=env.get(ENV["relist_seconds"], "300"),
        help="list gpupin's objects this often and drop from the cache what is gone (a deletion a watch "
        f"gap hid), 0 to disable (env {ENV['relist_seconds']}; default 300)",
    )
    parser.add_argument(
        "--gpu-loss-grace-seconds",
        type=float,
        default=env.get(ENV["gpu_loss_grace_seconds"], "60"),
        help="a GPU a node's inventory stops reporting keeps its pods this long before they are deleted "
        "and re-planned; an unreadable or missing inventory deletes nothing "
        f"(env {ENV['gpu_loss_grace_seconds']}; default 60)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=env.get(ENV["metrics_port"], "8000"),
        help=f"port of the Prometheus /metrics endpoint, 0 to disable (env {ENV['metrics_port']}; default 8000)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=env.get(ENV["health_port"], "8080"),
        help=f"port of the liveness endpoint /healthz, 0 to disable (env {ENV['health_port']}; default 8080)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=env.get(ENV["concurrency"], "8"),
        help=f"API writes of different deployments in flight at once (env {ENV['concurrency']}; default 8)",
    )
    parser.add_argument(
        "--max-concurrent-rollouts",
        type=int,
        default=env.get(ENV["max_concurrent_rollouts"], "4"),
        help="deployments that replace their pods at once after an operator-wide change (new image, flag or "
        "gpupin version); one whose own spec changed rolls at once "
        f"(env {ENV['max_concurrent_rollouts']}; default 4)",
    )

    parser.add_argument(
        "--model-metadata",
        choices=("online", "offline"),
        default=env.get(ENV["model_metadata"])
        or ("offline" if env.get("HF_HUB_OFFLINE") in ("1", "true") else "online"),
        help="online: read the metadata of models the model data does not know from Hugging Face or the "
        "Ollama registry (config.json, safetensors and GGUF headers; never weights); offline: size them from "
        f"their name (env {ENV['model_metadata']}; default online)",
    )
    parser.add_argument(
        "--model-data",
        action="append",
        default=[p for p in env.get(ENV["model_data"], "").split(",") if p],
        metavar="FILE",
        help="model data in the format of gpupin's models.yaml, over the bundled data (repeatable; env "
        f"{ENV['model_data']}, comma-separated; the chart mounts a ConfigMap)",
    )
    parser.add_argument(
        "--hf-endpoint",
        default=env.get(ENV["hf_endpoint"]) or None,
        help=f"Hugging Face endpoint or mirror (env {ENV['hf_endpoint']}; token from HF_TOKEN)",
    )
    parser.add_argument(
        "--ollama-registry",
        default=env.get(ENV["ollama_registry"]) or None,
        help=f"Ollama registry (env {ENV['ollama_registry']}; default the public registry)",
    )
    admin.add_arguments(parser)
    lease.add_arguments(parser, ENV)


def from_arguments(args: argparse.Namespace) -> OperatorConfig:
    if args.resync_seconds <= 0:
        raise ValueError("--resync-seconds must be positive")
    if not args.relist_seconds >= 0:  # NaN too
        raise ValueError("--relist-seconds must be 0 (off) or positive")
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if args.max_concurrent_rollouts < 1:
        raise ValueError("--max-concurrent-rollouts must be at least 1")
    if not args.gpu_loss_grace_seconds >= 0:  # NaN too
        raise ValueError("--gpu-loss-grace-seconds must be 0 or more")
    for name in args.namespaces:
        if len(name) > 63 or not _NAMESPACE_RE.match(name):
            raise ValueError(
                f"--namespace {name!r}: not a namespace name (lowercase letters, digits and '-', at most 63)"
            )
    policy = admin.settings(args)
    if args.model_data:  # read now, so a bad file stops the start with its name, not a traceback later
        from gpupin.controller.metadata import cluster_catalog

        try:
            cluster_catalog(tuple(args.model_data))
        except OSError as err:
            raise ValueError(f"--model-data {err.filename}: {err.strerror}") from None
    return OperatorConfig(
        pinning=args.pinning,
        runtime_class_name=args.runtime_class or None,
        ollama_image=args.ollama_image,
        vllm_image=args.vllm_image,
        require_gpu=(
            args.require_gpu
            if args.require_gpu is not None
            else admin.env_bool(ENV["require_gpu"], _DEFAULTS.require_gpu)
        ),
        namespaces=tuple(dict.fromkeys(args.namespaces)),
        resync_seconds=args.resync_seconds,
        relist_seconds=args.relist_seconds,
        gpu_loss_grace_seconds=args.gpu_loss_grace_seconds,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        **lease.settings(args),
        concurrency=args.concurrency,
        max_concurrent_rollouts=args.max_concurrent_rollouts,
        model_metadata=args.model_metadata,
        model_data=tuple(args.model_data),
        hf_endpoint=args.hf_endpoint,
        ollama_registry=args.ollama_registry,
        **policy,
    )


def for_plan(args: argparse.Namespace) -> OperatorConfig:
    """What `gpupin plan` renders and plans with: its own flags and the admin's policy flags, mapped
    to render settings and a :class:`~gpupin.policy.Policy` as the operator maps them. Raises
    ValueError naming a bad flag."""
    return OperatorConfig(
        pinning=args.pinning,
        runtime_class_name=args.runtime_class or None,
        ollama_image=args.ollama_image,
        vllm_image=args.vllm_image,
        **admin.settings(args),
    )


def from_environment(argv: Sequence[str] = ()) -> OperatorConfig:
    """The configuration `kopf run -m gpupin.controller.handlers` uses: environment variables only."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return from_arguments(parser.parse_args(list(argv)))


def operator_identity(environ: Mapping[str, str] | None = None) -> str:
    """The name this operator process gives itself in kopf's peering and logs.

    The pod's name when the chart passes it (``POD_NAME``, or kopf's own ``POD_ID``); else
    ``user@host/pid``. The user comes from the environment or, failing that, the numeric uid:
    kopf's default asks the password database, which has no entry for the uid images run as
    (65532), and crashed the operator pod with ``KeyError: 'getpwuid(): uid not found'``."""
    env = os.environ if environ is None else environ
    for name in ("POD_NAME", "POD_ID"):
        if env.get(name):
            return env[name]
    user = next((env[n] for n in ("LOGNAME", "USER", "LNAME", "USERNAME") if env.get(n)), None)
    if user is None:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}/{os.getpid()}"
