"""Test-wide settings. HYPOTHESIS_PROFILE=thorough runs the property tests ten times longer."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# `gpupin plan` reads unknown models' metadata from Hugging Face or the Ollama registry by default.
# Tests run offline: the ones that read metadata point it at a local stand-in (tests/model_hub.py).
os.environ["GPUPIN_MODEL_METADATA"] = "offline"
os.environ["HF_HUB_OFFLINE"] = "1"


# --- a real control plane (kwokctl, binary runtime) shared by the operator and e2e tests ---

import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from kwok import Cluster, Env, missing_tools, start_cluster, stop_cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"control-plane binaries not built ({', '.join(missing)}): run `make cluster-tools`")
    workdir = tmp_path_factory.mktemp("kwok")
    running = start_cluster(workdir, f"gpupin-test-{uuid.uuid4().hex[:6]}")
    try:
        running.kubectl(
            "apply",
            "-f",
            str(Path(__file__).resolve().parents[1] / "crds" / "llmdeployments.gpupin.dev.yaml"),
        )
        running.kubectl(
            "wait", "--for=condition=Established", "crd/llmdeployments.gpupin.dev", "--timeout=60s"
        )
        yield running
    finally:
        stop_cluster(running)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can print logs only for failures."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def env(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    environment = Env(cluster, tmp_path)
    yield environment
    environment.close()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("operator log tail:\n" + environment.logs)


@pytest.fixture
def bare_node(cluster: Cluster) -> Iterator[str]:
    """A KWOK node with no GPU facts yet (for the agent to publish); deleted after the test."""
    name = f"bare-{uuid.uuid4().hex[:6]}"
    cluster.kube.request(
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        },
    )
    yield name
    cluster.delete_node(name)
