"""Model facts — a model's shape and weights — and the pure readers of its metadata.

:class:`ModelFacts` is what sizing works from; :func:`facts_from_hf` reads a Hugging Face
``config.json`` with safetensors parameter counts, :func:`facts_from_gguf_header` a GGUF header.
Fetching that metadata (network, cache) is :mod:`gpupin.modelsource`'s job, not this package's.
"""

from gpupin.modelfacts.facts import DTYPE_BYTES, QUANT_WEIGHT_BYTES, ModelFacts
from gpupin.modelfacts.gguf_header import GGUFHeaderError, facts_from_gguf_header, file_type_name
from gpupin.modelfacts.hf_config import ConfigError, facts_from_hf, quantization_of

__all__ = [
    "DTYPE_BYTES",
    "QUANT_WEIGHT_BYTES",
    "ConfigError",
    "GGUFHeaderError",
    "ModelFacts",
    "facts_from_gguf_header",
    "facts_from_hf",
    "file_type_name",
    "quantization_of",
]
