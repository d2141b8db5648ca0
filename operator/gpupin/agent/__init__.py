"""The gpupin node agent: reads the node's GPUs (NVML or a fake inventory) and publishes them on its Node."""
