"""The gpupin operator: watch-fed caches, one level-based reconcile per LLMDeployment, and kopf wiring.

Layers (imports only go downwards):
    handlers   kopf registration: watches feed the cache and the work queue
    runtime    the work queue, the single allocation step, applying and status writes
    decide     pure: from cached state and a plan to the writes a reconcile makes
    cache      watch-fed state: deployments, pods, services, claim templates, node inventories
    kube       the thin REST client (the only module that talks to the API server)
"""
