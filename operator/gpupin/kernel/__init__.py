"""The generic placement kernel: cluster state and its indexes (:mod:`~gpupin.kernel.state`),
eligibility and why nothing is eligible (:mod:`~gpupin.kernel.eligibility`), the words of refusals
(:mod:`~gpupin.kernel.prose`), and the two ways of placing an engine's pods — exclusive
tensor-parallel groups (:mod:`~gpupin.kernel.groups`) and shared per-GPU servers
(:mod:`~gpupin.kernel.shared`). It knows neither engines nor pinning modes: they hand it data."""
