"""Operator settings from flags and environment: --require-gpu and GPUPIN_REQUIRE_GPU, --relist-seconds
and GPUPIN_RELIST_SECONDS, the cluster admin's knobs (allowed images, env from Secrets and
ConfigMaps, claims, StorageClasses, GPU sharing across namespaces, the model cache limit,
NetworkPolicies).

Aspects: the default requires GPU memory; the flag wins over the variable; the variable takes
true/false spellings; anything else is a one-line error from `gpupin operator` (exit 2), not a
traceback.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gpupin.controller import admin, config
from gpupin.policy import Policy


def _parse(argv: list[str]) -> config.OperatorConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_arguments(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        (None, [], True),
        ("false", [], False),
        ("0", [], False),
        ("True", [], True),
        ("false", ["--require-gpu"], True),
        (None, ["--no-require-gpu"], False),
    ],
)
def test_require_gpu(
    monkeypatch: pytest.MonkeyPatch, env: str | None, argv: list[str], expected: bool
) -> None:
    if env is None:
        monkeypatch.delenv(config.ENV["require_gpu"], raising=False)
    else:
        monkeypatch.setenv(config.ENV["require_gpu"], env)
    settings = _parse(argv)
    assert settings.require_gpu is expected
    assert settings.render.require_gpu is expected


def test_a_bad_value_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV["require_gpu"], "maybe")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gpupin"), "operator"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "gpupin: GPUPIN_REQUIRE_GPU='maybe': expected true or false"


def test_the_operator_names_itself_after_its_pod() -> None:
    assert (
        config.operator_identity({"POD_NAME": "gpupin-operator-7d9f-x2x", "USER": "x"})
        == "gpupin-operator-7d9f-x2x"
    )
    assert config.operator_identity({"POD_ID": "from-kopf-docs"}) == "from-kopf-docs"
    assert config.operator_identity({"USER": "ada"}).startswith("ada@")


_UID_WITHOUT_PASSWD_ENTRY = """
import getpass, os, sys
from gpupin.controller.config import operator_identity
os.setgid(65532); os.setuid(65532)
try:
    getpass.getuser()
except KeyError as exc:
    print("getuser:", exc)
print("identity:", operator_identity())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to a uid without a passwd entry")
def test_the_operator_starts_as_a_uid_without_a_passwd_entry() -> None:
    """The image runs as uid 65532, which has no passwd entry and no USER: kopf's default
    identity (getpass.getuser) raised KeyError there and the operator pod crash-looped."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOGNAME", "USER", "LNAME", "USERNAME")}
    result = subprocess.run(
        [sys.executable, "-c", _UID_WITHOUT_PASSWD_ENTRY], env=env, capture_output=True, text=True, check=True
    )
    # the witness: this process reproduces the crash kopf's default met in the pod
    assert "getuser: 'getpwuid(): uid not found: 65532'" in result.stdout
    assert f"identity: uid65532@{socket.gethostname()}/" in result.stdout


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [(None, [], 300.0), ("30", [], 30.0), ("0", [], 0.0), ("30", ["--relist-seconds", "2.5"], 2.5)],
)
def test_relist_seconds(
    monkeypatch: pytest.MonkeyPatch, env: str | None, argv: list[str], expected: float
) -> None:
    """How often gpupin's objects are listed to find deletions a watch gap hid; 0: never."""
    if env is None:
        monkeypatch.delenv(config.ENV["relist_seconds"], raising=False)
    else:
        monkeypatch.setenv(config.ENV["relist_seconds"], env)
    assert _parse(argv).relist_seconds == expected


@pytest.mark.parametrize(
    ("setting", "env", "message"),
    [
        ("relist_seconds", "-1", "gpupin: --relist-seconds must be 0 (off) or positive"),
        ("relist_seconds", "nan", "gpupin: --relist-seconds must be 0 (off) or positive"),
        ("relist_seconds", "soon", "gpupin: argument --relist-seconds: invalid float value: 'soon'"),
        ("gpu_loss_grace_seconds", "nan", "gpupin: --gpu-loss-grace-seconds must be 0 or more"),
        (
            "max_concurrent_rollouts",
            "x",
            "gpupin: argument --max-concurrent-rollouts: invalid int value: 'x'",
        ),
        ("resync_seconds", "often", "gpupin: argument --resync-seconds: invalid float value: 'often'"),
        ("metrics_port", "eighty", "gpupin: argument --metrics-port: invalid int value: 'eighty'"),
        (
            "namespaces",
            "llm,team*",
            "gpupin: --namespace 'team*': not a namespace name (lowercase letters, digits and '-', at most 63)",
        ),
        (
            "allow_env_from_secrets",
            "maybe",
            "gpupin: GPUPIN_ALLOW_ENV_FROM_SECRETS='maybe': expected true or false",
        ),
        (
            "allowed_images",
            "ollama/ollama,quay.io",
            "gpupin: --allowed-images 'quay.io': a registry is written with its slash (quay.io/…) or as a "
            "repository (registry/org/name); a name without a slash is a Docker Hub image",
        ),
        (
            "default_cache_size",
            "huge",
            "gpupin: --default-cache-size 'huge': expected auto, none or a size of at least 1Gi such as 200Gi",
        ),
        (
            "default_cache_size",
            "0",
            "gpupin: --default-cache-size '0': expected auto, none or a size of at least 1Gi such as 200Gi",
        ),
        (
            "default_cache_size",
            "100m",
            "gpupin: --default-cache-size '100m': expected auto, none or a size of at least 1Gi such as 200Gi",
        ),
        ("network_policy", "strict", "gpupin: --network-policy 'strict': expected none or namespace"),
        (
            "network_policy_namespaces",
            "team=ml,bad key",
            "gpupin: --network-policy-namespaces 'bad key': expected key=value or key (namespace labels, "
            "comma-separated), e.g. kubernetes.io/metadata.name=ingress-nginx",
        ),
        (
            "network_policy_namespaces",
            "kubernetes.io/metadata.name=ingress,kubernetes.io/metadata.name=monitoring",
            "gpupin: --network-policy-namespaces: label kubernetes.io/metadata.name named twice; the labels are "
            "ANDed (a namespace must carry all of them), so a namespace cannot match two values of one key",
        ),
        ("lease_duration_seconds", "0.5", "gpupin: --lease-duration must be at least 1 (seconds)"),
        ("lease_namespace", "Ops_NS", "gpupin: --lease-namespace 'Ops_NS': not a namespace name"),
        ("lease_namespace", "a" * 64, f"gpupin: --lease-namespace '{'a' * 64}': not a namespace name"),
        (
            "namespaces",
            "a" * 64,
            f"gpupin: --namespace '{'a' * 64}': not a namespace name (lowercase letters, digits and '-', at most 63)",
        ),
        ("leader_election", "maybe", "gpupin: GPUPIN_LEADER_ELECTION='maybe': expected true or false"),
        (
            "router_pod",
            '{"tolerations": [{"key": "gpu", "effect": "Never"}]}',
            "gpupin: --router-pod: tolerations.0.effect: Input should be 'NoSchedule', 'PreferNoSchedule', "
            "'NoExecute' or '' (expected a JSON object with nodeSelector, tolerations, imagePullSecrets, "
            "priorityClassName, resources)",
        ),
    ],
)
def test_a_bad_setting_in_the_environment_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, setting: str, env: str, message: str
) -> None:
    """Every setting's environment variable (the admin's knobs among them, config.ENV holds admin.ENV):
    exit 2 and one line; argparse's own errors come after its usage line."""
    monkeypatch.setenv(config.ENV[setting], env)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gpupin"), "operator"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == message
    if ": argument --" not in message:
        assert done.stderr.strip() == message


def test_gpu_loss_grace_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENV["gpu_loss_grace_seconds"], raising=False)
    assert _parse([]).gpu_loss_grace_seconds == 60
    monkeypatch.setenv(config.ENV["gpu_loss_grace_seconds"], "5")
    assert _parse([]).gpu_loss_grace_seconds == 5
    assert _parse(["--gpu-loss-grace-seconds", "0"]).gpu_loss_grace_seconds == 0
    with pytest.raises(ValueError, match="--gpu-loss-grace-seconds must be 0 or more"):
        _parse(["--gpu-loss-grace-seconds", "-1"])


# -- the cluster admin's knobs (gpupin.policy, the model cache, NetworkPolicies) ---------------------


def _clear_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in admin.ENV.values():
        monkeypatch.delenv(setting, raising=False)


def test_the_admin_knobs_default_to_what_gpupin_always_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compatible defaults: any image, env from Secrets and ConfigMaps, claims, StorageClasses; the
    secure ones: no GPU shared across namespaces, a cache limit sized from the models, and no
    NetworkPolicy (clients of other namespaces, ingress controllers and scrapers keep working)."""
    _clear_admin_env(monkeypatch)
    settings = _parse([])
    assert settings.policy == Policy(own_images=(settings.ollama_image, settings.vllm_image))
    assert settings.policy.cross_namespace_sharing is False
    assert (settings.render.default_cache_size, settings.render.network_policy) == ("auto", "none")


def test_the_admin_knobs_from_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_admin_env(monkeypatch)
    monkeypatch.setenv(admin.ENV["allowed_images"], "registry.example/llm/, vllm/vllm-openai:")
    monkeypatch.setenv(admin.ENV["allow_env_from_secrets"], "false")
    monkeypatch.setenv(admin.ENV["allow_existing_claims"], "0")
    monkeypatch.setenv(admin.ENV["allowed_storage_classes"], "local,fast")
    monkeypatch.setenv(admin.ENV["allow_cross_namespace_sharing"], "true")
    monkeypatch.setenv(admin.ENV["default_cache_size"], "200Gi")
    monkeypatch.setenv(admin.ENV["network_policy"], "namespace")
    monkeypatch.setenv(admin.ENV["network_policy_namespaces"], "team=ml,monitoring")
    settings = _parse([])
    policy = settings.policy
    assert policy.allowed_images == ("registry.example/llm/", "vllm/vllm-openai:")
    assert (policy.allow_env_from_secrets, policy.allow_env_from_config_maps) == (False, True)
    assert (policy.allow_existing_claims, policy.allow_storage_classes) == (False, True)
    assert policy.allowed_storage_classes == ("local", "fast")
    assert policy.cross_namespace_sharing is True
    render = settings.render
    assert (render.default_cache_size, render.network_policy) == ("200Gi", "namespace")
    assert render.network_policy_namespaces == (("team", "ml"), ("monitoring", None))
    # a flag wins over its variable; list flags add to the variable's entries
    flagged = _parse(
        [
            "--allow-env-from-secrets",
            "--no-allow-cross-namespace-sharing",
            "--allowed-images",
            "ollama/ollama",
        ]
    )
    assert flagged.policy.allow_env_from_secrets is True and flagged.policy.cross_namespace_sharing is False
    assert flagged.policy.allowed_images == ("registry.example/llm/", "vllm/vllm-openai:", "ollama/ollama")
    assert (
        _parse(["--default-cache-size", "none", "--network-policy", "none"]).render.default_cache_size
        == "none"
    )


def test_every_setting_has_its_environment_variable() -> None:
    """Every flag of `gpupin operator` has a GPUPIN_* twin (HF_ENDPOINT keeps Hugging Face's name)."""
    fields = set(config.OperatorConfig.__dataclass_fields__)
    assert fields == set(config.ENV)
    assert all(v.startswith("GPUPIN_") or v == "HF_ENDPOINT" for v in config.ENV.values())


def test_the_lease_is_held_where_the_operator_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """On by default, in the pod's own namespace (the chart passes POD_NAMESPACE), else default;
    flags over the environment."""
    for name in ("leader_election", "lease_namespace", "lease_name", "lease_duration_seconds"):
        monkeypatch.delenv(config.ENV[name], raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    from gpupin.controller import lease

    monkeypatch.setattr(lease, "SERVICE_ACCOUNT_NAMESPACE", "/nonexistent/namespace")  # CI may run in a pod
    plain = _parse([])
    assert (plain.leader_election, plain.lease_name, plain.lease_duration_seconds) == (
        True,
        "gpupin-operator",
        15,
    )
    assert plain.lease_namespace == "default"
    monkeypatch.setenv("POD_NAMESPACE", "gpupin-system")
    assert _parse([]).lease_namespace == "gpupin-system"
    given = _parse(["--lease-namespace", "ops", "--lease-duration", "30", "--no-leader-election"])
    assert (given.lease_namespace, given.lease_duration_seconds, given.leader_election) == ("ops", 30, False)
    monkeypatch.setenv(config.ENV["leader_election"], "false")
    assert _parse([]).leader_election is False
