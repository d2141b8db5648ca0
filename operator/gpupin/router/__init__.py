"""``gpupin router``: one endpoint per LLMDeployment, routed by model name.

:mod:`~gpupin.router.table` decides (pure); :mod:`~gpupin.router.proxy` serves and forwards;
:mod:`~gpupin.router.source` keeps the table current.
"""
