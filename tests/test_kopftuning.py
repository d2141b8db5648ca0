"""kopf's change detection switched off (gpupin.controller.kopftuning), and why that is safe.

Aspects: gpupin registers only handlers that listen (``on.event``) and start-up/clean-up
activities — no change-detecting handler, daemon, timer, index or webhook, the only readers of the
"essence" kopf would otherwise deep-copy out of every event; with the tuning an event's essence is
empty and nothing is copied or stored on the object.
"""

from __future__ import annotations

import kopf

from gpupin.controller import handlers, kopftuning


def test_gpupin_registers_no_handler_that_reads_kopfs_change_detection() -> None:
    registry = kopf.get_default_registry()
    assert handlers.deployment_event is not None  # imported: its handlers are registered
    assert registry._watching.get_all_handlers(), "the on.event handlers are there"
    for name in ("_changing", "_spawning", "_indexing", "_webhooks"):
        found = [h.id for h in getattr(registry, name).get_all_handlers()]
        assert found == [], f"{name} handlers {found}: kopftuning.listen_only would break them"


def test_listening_settings_copy_nothing_and_store_nothing() -> None:
    settings = kopf.OperatorSettings()
    kopftuning.listen_only(settings)
    body = kopf.Body({"metadata": {"name": "x", "annotations": {"a": "b"}}, "spec": {"big": [1] * 100}})
    assert settings.persistence.diffbase_storage.build(body=body) == {}
    assert settings.persistence.diffbase_storage.fetch(body=body) is None
    essence = {"spec": {"big": [1]}}
    assert settings.persistence.progress_storage.clear(essence=essence) is essence
    patch = kopf.Patch()
    settings.persistence.progress_storage.touch(body=body, patch=patch, value="x")
    settings.persistence.diffbase_storage.store(body=body, patch=patch, essence=essence)
    assert not patch, "nothing written to the object"
