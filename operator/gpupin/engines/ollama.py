"""Ollama: one server per GPU (or GPU set) holding several models, sharing it by memory.

- Sizing: the GGUF's size (the model data knows Ollama's default tags; otherwise parameters ×
  bytes per parameter of the quantization in the tag, Q4_K_M by default) + a KV cache of
  ``context × numParallel`` tokens per loaded model + per GPU ~457 MiB of CUDA context and the
  compute graph (4 × min(context, 512) × (hidden + vocab) bytes, as Ollama's own estimator did).
- Placement: shared per-GPU servers (:mod:`gpupin.kernel.shared`); a model larger than every GPU
  spans GPUs of one node in one server, which splits its layers by free memory.
- Launch settings: the context length, capped at the longest the pod's models were trained for
  (Ollama caps each model there itself, and the memory was planned for the capped figure).
- Pod: an init container pulls the models (:func:`~gpupin.engines.ollama_scripts.pull_script`);
  a postStart hook loads them without generating and keeps them loaded; the readiness probe says
  which model is not serving and why. One Service per model, selecting the pods that hold it.
- User: not root (:data:`RUN_AS`, see :func:`pod_security`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gpupin import naming, reasons
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ModelRef
from gpupin.engines import ollama_scripts
from gpupin.engines.base import MODELS_PATH, Engine, EnginePod, container_env, security_context, service
from gpupin.engines.ollama_sizing import (
    KV_CACHE_BYTES,
    OLLAMA_CUDA_OVERHEAD,
    OLLAMA_DEFAULT_QUANT,
    OLLAMA_UNKNOWN_GRAPH,
    cpu_token_embedding,
    flash_attention,
    gguf_architecture,
    graph_bytes,
    kv_cache_bytes,
)
from gpupin.kernel.context import PlanContext
from gpupin.kernel.eligibility import Refusal
from gpupin.kernel.shared import SharedPlacer, SharedRequest
from gpupin.placement import LaunchSettings, Placement
from gpupin.sizing import (
    Estimate,
    ModelFacts,
    gguf_quant_bytes,
    gguf_quantization,
    kv_per_token_guess,
    normalize_ollama,
    parameters_from_name,
    source_of,
)

MODEL_PULL_CONTAINER = "pull-models"
"""The init container that pulls the models (the operator reads its termination message)."""

RUN_AS = 1000
"""The uid, gid and fsGroup of Ollama pods: uid 1000 is ``ubuntu`` in the official image (Ubuntu
24.04); the server needs no other user."""
HOME = "/tmp"
"""HOME of the Ollama containers: ``ollama serve`` writes its key pair to ``$HOME/.ollama`` at
start and exits when it cannot ("could not create directory mkdir /.ollama: permission denied" for a
uid whose HOME is ``/``); ``/tmp`` is writable by any user in the official image and the kind
tier's."""


def pod_security() -> dict[str, Any]:
    """The pod securityContext of an Ollama pod: not root. What the server writes is in
    ``OLLAMA_MODELS`` (the models volume: an emptyDir, world-writable, or a claim the kubelet gives
    the fsGroup where its volume type allows), ``$HOME/.ollama`` (:data:`HOME`) and ``/tmp`` (the
    hooks' logs). ``OnRootMismatch``: a large cache on a claim is not walked at every start. A cache
    on a claim written by root pods on a volume the kubelet does not chown (NFS, hostPath) keeps
    serving the models it holds (a pull that cannot write falls back to the cached copy); new models
    need the files writable by gid 1000."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
    }


class Ollama(Engine):
    name = "ollama"
    display_name = "Ollama"
    default_image = "ollama/ollama:0.17.4"
    port = 11434
    owns_gpus = False
    cuda_visible_uuids = True
    naming_scheme = "ollama"

    def size(self, model: ModelRef, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
        name = model.name
        options = spec.ollama_options
        quant = _quantization(name)
        parameters = facts.parameters if facts else parameters_from_name(name)
        if parameters is None:
            return None
        same_quant = quant is None or (
            facts is not None
            and gguf_quant_bytes(quant) == gguf_quant_bytes(facts.ollama_quantization.lower())
        )
        if facts is not None and facts.ollama_weights_bytes and same_quant:
            weights = facts.ollama_weights_bytes
            label = facts.ollama_quantization
        else:
            sized = gguf_quant_bytes(quant or OLLAMA_DEFAULT_QUANT)
            if sized is None:
                sized = gguf_quant_bytes(OLLAMA_DEFAULT_QUANT)
                assert sized is not None
                label = f"{sized[1]} (assumed: gpupin does not know the quantization {quant!r})"
            else:
                label = sized[1]
            weights = int(parameters * sized[0])
        trained = facts.context_length if facts else 0  # 0: the data does not say
        context = min(options.context_length, trained) if trained else options.context_length
        parallel = 1 if facts is not None and facts.embedding else options.num_parallel
        if facts:
            weights -= cpu_token_embedding(facts, label)
            arch = gguf_architecture(facts)
            # an embedding model encodes each input in one pass: no KV cache is kept between tokens
            flash = flash_attention(facts, arch, options.flash_attention)
            kv: float = (
                0
                if facts.embedding
                else kv_cache_bytes(facts, arch, context, parallel, options.kv_cache_type, flash)
            )
            graph = graph_bytes(facts, arch, context * parallel, int(kv), flash)
            weights += facts.projector_bytes + facts.vision_graph_bytes
            if facts.vision_graph_bytes:
                label += " (with the image encoder's graph)"
        else:
            kv = (
                kv_per_token_guess(parameters)
                * KV_CACHE_BYTES[options.kv_cache_type]
                / 2
                * context
                * parallel
            )
            graph = OLLAMA_UNKNOWN_GRAPH
        return Estimate(
            model=name,
            source=source_of(facts),
            weights_bytes=weights,
            kv_bytes=math.ceil(kv),
            overhead_per_gpu=OLLAMA_CUDA_OVERHEAD + graph,
            weights_label=label,
            context_tokens=context * parallel,
            facts=facts,
        )

    def place(
        self, ctx: PlanContext, spec: LLMDeploymentSpec, estimates: Sequence[Estimate]
    ) -> tuple[list[Placement], str, str]:
        options = spec.ollama_options
        for est in estimates:
            _check_name(est)

        trained = {e.model: (e.facts.context_length or None) if e.facts else None for e in estimates}

        def launch(models: Sequence[str]) -> LaunchSettings:
            return LaunchSettings(
                context_length=context_length(options.context_length, [trained[m] for m in models])
            )

        def summary(placements: Sequence[Placement], placed: Sequence[Estimate]) -> str:
            sizes = ", ".join(f"{e.model} {e.explain().split(' (', 1)[0]}" for e in placed)
            served = max((p.launch.context_length or options.context_length for p in placements), default=0)
            message = (
                f"{len(placements)} Ollama pod(s) on {sum(len(p.gpus) for p in placements)} GPU(s); {sizes} "
                f"(context {served} × {options.num_parallel} parallel, kept loaded)"
            )
            if served < options.context_length:
                message += (
                    f"; contextLength {options.context_length} is capped at the longest context "
                    "the models were trained for"
                )
            return message

        request = SharedRequest(
            estimates=estimates,
            replicas=spec.replicas,
            engine=self.display_name,
            smaller_options=(
                "a smaller model or quantization",
                "a lower ollama.contextLength or numParallel (smaller KV cache)",
            ),
            launch=launch,
            summary=summary,
        )
        return SharedPlacer(ctx, request).run()

    def pod(self, spec: LLMDeploymentSpec, placement: Placement, image: str, require_gpu: bool) -> EnginePod:
        options = spec.ollama_options
        context = placement.launch.context_length or options.context_length
        env = [
            {"name": "HOME", "value": HOME},
            {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{self.port}"},
            {"name": "OLLAMA_MODELS", "value": MODELS_PATH},
            {"name": "OLLAMA_KEEP_ALIVE", "value": options.keep_alive},
            {"name": "OLLAMA_CONTEXT_LENGTH", "value": str(context)},
            {"name": "OLLAMA_NUM_PARALLEL", "value": str(options.num_parallel)},
            {"name": "OLLAMA_MAX_LOADED_MODELS", "value": str(len(placement.models))},
        ]
        if options.flash_attention is not None:  # unset: Ollama decides per model (on for gemma3, qwen3, …)
            env.append({"name": "OLLAMA_FLASH_ATTENTION", "value": "1" if options.flash_attention else "0"})
        env.append({"name": "OLLAMA_KV_CACHE_TYPE", "value": options.kv_cache_type})
        models = placement.models
        container: dict[str, Any] = {
            "name": "ollama",
            "image": image,
            "args": ["serve"],
            "ports": [{"name": "http", "containerPort": self.port, "protocol": "TCP"}],
            "env": env,
            # Load every planned model without generating and keep it resident, so the memory the
            # planner budgeted is the memory Ollama holds. The hook returns at once and never fails.
            "lifecycle": {
                "postStart": {
                    "exec": {"command": ["/bin/bash", "-c", ollama_scripts.preload_script(models, self.port)]}
                }
            },
            "startupProbe": {
                "httpGet": {"path": "/", "port": "http"},
                "periodSeconds": 5,
                "failureThreshold": 60,
            },
            "livenessProbe": {
                "httpGet": {"path": "/", "port": "http"},
                "periodSeconds": 20,
                "failureThreshold": 3,
            },
            # Ready once every planned model is loaded, and wholly on the GPU unless CPU is allowed.
            "readinessProbe": {
                "exec": {
                    "command": [
                        "/bin/bash",
                        "-c",
                        ollama_scripts.readiness_script(models, self.port, require_gpu),
                    ]
                },
                "periodSeconds": 10,
                "timeoutSeconds": 5,
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "models", "mountPath": MODELS_PATH}],
            "securityContext": security_context(),
        }
        return EnginePod(
            container=container,
            init_containers=[self._pull_container(spec, models, image)],
            labels={naming.model_label_key(model): "true" for model in models},
            pod_security=pod_security(),
        )

    def _pull_container(self, spec: LLMDeploymentSpec, models: Sequence[str], image: str) -> dict[str, Any]:
        """Pull the models into the cache before the server starts, without touching a GPU: the image
        sets NVIDIA_VISIBLE_DEVICES=all, which ``void`` overrides in every pinning mode."""
        env = [
            {"name": "HOME", "value": HOME},
            {"name": "OLLAMA_HOST", "value": f"127.0.0.1:{self.port}"},
            {"name": "OLLAMA_MODELS", "value": MODELS_PATH},
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
        ]
        return {
            "name": MODEL_PULL_CONTAINER,
            "image": image,
            "command": ["/bin/bash", "-c", ollama_scripts.pull_script(models, self.port)],
            "env": container_env(env, spec),
            # The last lines of the log (which model, Ollama's error) become the termination message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "models", "mountPath": MODELS_PATH}],
            "securityContext": security_context(),
        }

    def services(
        self, deployment: LLMDeployment, labels: dict[str, str], selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        names = naming.model_service_names(deployment.metadata.name, [m.name for m in deployment.spec.models])
        return [
            service(
                names[model.name],
                deployment.metadata.namespace,
                labels,
                {**selector, naming.model_label_key(model.name): "true"},
                self.port,
                annotations={"gpupin.dev/model": model.name},
            )
            for model in deployment.spec.models
        ]


def context_length(requested: int, trained: Sequence[int | None]) -> int:
    """A server's context length (tokens): the spec's, capped at the longest context its models
    were trained for when the model data knows every one (``None``: unknown). Ollama caps each
    model at its own (``llm/server.go``, v0.17.4: ``NumCtx`` above the GGUF's ``context_length`` is
    set to it, with a "requested context size too large for model" warning), and sizing planned
    the capped figure."""
    if not trained or any(tokens is None for tokens in trained):
        return requested
    return min(requested, max(tokens for tokens in trained if tokens is not None))


def _quantization(name: str) -> str | None:
    """The GGUF quantization an Ollama tag names (``qwen2.5:14b-instruct-q8_0`` → ``q8_0``), if any."""
    return gguf_quantization(normalize_ollama(name).rsplit(":", 1)[-1])


def _check_name(est: Estimate) -> None:
    """A Hugging Face repo id is not a name Ollama can pull (``InvalidSpec``), unless it is a GGUF
    repo written as ``hf.co/org/repo:quant``."""
    facts, name = est.facts, est.model
    if facts is None or name.lower().startswith(("hf.co/", "huggingface.co/")):
        return
    if name.lower() in {n.lower() for n in facts.hf_names} and name not in facts.ollama_names:
        instead = facts.ollama_names[0] if facts.ollama_names else "hf.co/<org>/<repo>-GGUF:<quantization>"
        raise Refusal(
            reasons.INVALID_SPEC,
            f"{name} is a Hugging Face repo; Ollama pulls Ollama names: use {instead} (or engine: vllm for "
            "the Hugging Face repo)",
        )
