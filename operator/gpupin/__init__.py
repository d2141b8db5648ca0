"""gpupin: places LLM servers on the right GPU of Kubernetes nodes with mixed NVIDIA GPUs."""

__version__ = "0.1.0"
