"""Names of the objects gpupin creates (hypothesis and examples).

Aspects: pod names are distinct per (deployment, GPU set) within a namespace by construction
(checked with an ideal hash, so that only the structure can make two names meet); the Ollama
Services of one deployment are distinct per model whatever the hash (checked with the real one and
with a 16-valued one, which makes the hashed names meet); every name is a DNS-1035 label of at most
63 characters; names are today's wherever today's did not clash — pods of deployments whose names
are kept whole, every vLLM Service, every Ollama Service of a deployment whose models' names do not
meet (against a copy of the function every release named them with); the clashes a review found
within one deployment are gone. Across deployments Service names may meet: the operator reports
that (tests/test_decide.py, ``test_a_service_name_another_deployment_has_…``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from random import Random
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from gpupin import naming

from helpers import is_dns_1035_label

# --- strategies ---------------------------------------------------------------------------------

# few letters, so that names meet often: "a.b" and "a-b", "a" + "b-1" and "a-b" + "1"
_label = st.from_regex(r"[ab1]([-ab1]{0,4}[ab1])?", fullmatch=True)


@st.composite
def deployment_names(draw: st.DrawFn) -> str:
    """LLMDeployment names: DNS-1123 subdomains (dots, leading digits, ``--``), some longer than a label."""
    name = ".".join(draw(st.lists(_label, min_size=1, max_size=3)))
    if draw(st.integers(0, 4)) == 0:  # long: cut to fit, so only the hash tells them apart
        name = "a" * draw(st.integers(50, 70)) + name
    return name


@st.composite
def model_names(draw: st.DrawFn) -> str:
    """Ollama model references: ``[org/]name[:tag]`` with dots, underscores, capitals; some long."""
    part = st.from_regex(r"[aAb1]([-._aAb1]{0,4}[aAb1])?", fullmatch=True)
    name = draw(part)
    if draw(st.integers(0, 5)) == 0:  # longer than a slug keeps (40)
        name = "m" * draw(st.integers(36, 50)) + name
    if draw(st.booleans()):
        name = f"{draw(part)}/{name}"
    if draw(st.booleans()):
        name = f"{name}:{draw(part)}"
    return name


_model_lists = st.lists(model_names(), min_size=1, max_size=6, unique=True)
_gpu_sets = st.frozensets(st.sampled_from(["GPU-a", "GPU-b", "GPU-c", "GFD-n-0"]), min_size=1)


@contextmanager
def ideal_hash() -> Iterator[Callable[[str], str]]:
    """``short_hash`` as a hash without collisions: distinct texts get distinct 6-hex-digit codes.
    Two names that still meet meet by their structure, not by bad luck with SHA-256."""
    codes: dict[str, str] = {}

    def code(text: str, length: int = naming.HASH_LEN) -> str:
        return codes.setdefault(text, f"{len(codes):0{length}x}")

    with mock.patch.object(naming, "short_hash", code):
        yield code


@contextmanager
def coarse_hash() -> Iterator[None]:
    """``short_hash`` with 16 values only (``00000`` and one hex digit): hashed names meet often."""

    def code(text: str, length: int = naming.HASH_LEN) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:1].rjust(length, "0")

    with mock.patch.object(naming, "short_hash", code):
        yield


def todays_model_service_name(deployment: str, model: str) -> str:
    """The oracle: ``model_service_name`` as every release before this one had it (a copy)."""
    candidate = f"{deployment}-{naming.model_slug(model)}"
    if naming.dns_label(candidate) == candidate:
        return candidate
    return naming._with_suffix(candidate, naming.short_hash(f"{deployment}\0{model}"))


# --- properties -------------------------------------------------------------------------------


@given(st.lists(st.tuples(deployment_names(), _gpu_sets), unique=True, min_size=2, max_size=12))
def test_pod_names_are_distinct_per_deployment_and_gpu_set(pods: list[tuple[str, frozenset[str]]]) -> None:
    with ideal_hash():
        names = {naming.pod_name(deployment, gpus): (deployment, gpus) for deployment, gpus in pods}
    assert len(names) == len(pods), names
    assert all(is_dns_1035_label(name) for name in names), names


@given(deployment_names(), _model_lists, st.booleans())
def test_distinct_models_of_one_deployment_get_distinct_service_names(
    deployment: str, models: list[str], coarse: bool
) -> None:
    """Whatever the hash: with a 16-valued one the hashed names meet, and are hashed again."""
    if coarse:
        with coarse_hash():
            names = naming.model_service_names(deployment, models)
    else:
        names = naming.model_service_names(deployment, models)
    assert list(names) == models
    assert len(set(names.values())) == len(models), names
    assert all(is_dns_1035_label(name) for name in names.values()), names


@given(deployment_names(), _model_lists, st.randoms(use_true_random=False))
def test_service_names_depend_on_the_set_of_models_not_their_order(
    deployment: str, models: list[str], rng: Random
) -> None:
    shuffled = list(models)
    rng.shuffle(shuffled)
    assert naming.model_service_names(deployment, shuffled) == naming.model_service_names(deployment, models)


@given(deployment_names(), _model_lists)
def test_service_names_are_todays_where_todays_did_not_clash(deployment: str, models: list[str]) -> None:
    """An upgrade renames no Ollama Service that worked: a model whose name of every release no
    other model of its deployment shares keeps it, and so does the one model whose slug is its own
    name (``mistral``) beside lossy ones (``alice/mistral``) — adding those renames nothing that
    worked; the others (two Services of one name, which never worked) each add a hash of
    (deployment, model)."""
    todays = {model: todays_model_service_name(deployment, model) for model in models}
    shared = Counter(todays.values())
    whole = Counter(todays[m] for m in models if naming.model_slug(m) == m)
    names = naming.model_service_names(deployment, models)
    for model in models:
        if shared[todays[model]] == 1 or (whole[todays[model]] == 1 and naming.model_slug(model) == model):
            assert names[model] == todays[model], model
        else:
            assert re.fullmatch(r".+-[0-9a-f]{6}", names[model]), names
    if len(shared) == len(models):
        assert names == todays


@given(deployment_names(), _gpu_sets)
def test_pod_and_vllm_service_names_that_lose_nothing_are_unchanged(
    deployment: str, gpus: frozenset[str]
) -> None:
    """A deployment whose name is a DNS-1035 label without ``--`` keeps today's names: no pod is
    replaced and no vLLM Service renamed by an upgrade (pods: when the name has at most 56 characters)."""
    whole = is_dns_1035_label(deployment) and "--" not in deployment
    if whole:
        assert naming.deployment_service_name(deployment) == deployment
    if whole and len(deployment) <= 56:
        assert (
            naming.pod_name(deployment, gpus) == f"{deployment}-{naming.short_hash(','.join(sorted(gpus)))}"
        )


@given(deployment_names(), _gpu_sets, _model_lists)
def test_every_name_is_a_dns_label_with_the_real_hash(
    deployment: str, gpus: frozenset[str], models: list[str]
) -> None:
    for name in (
        naming.pod_name(deployment, gpus),
        naming.deployment_service_name(deployment),
        *naming.model_service_names(deployment, models).values(),
    ):
        assert is_dns_1035_label(name), name


# --- the clashes of the review ---------------------------------------------------------------


def test_a_dotted_deployment_and_its_dashed_twin_get_different_pods_and_services() -> None:
    gpus = ["GPU-a", "GPU-b"]
    assert naming.pod_name("a.b", gpus) != naming.pod_name("a-b", gpus)
    assert naming.pod_name("a-b", gpus) == f"a-b-{naming.short_hash('GPU-a,GPU-b')}"
    assert naming.deployment_service_name("a.b") != naming.deployment_service_name("a-b") == "a-b"
    assert naming.model_service_names("a.b", ["m"]) != naming.model_service_names("a-b", ["m"])


def test_two_orgs_models_of_one_name_get_two_services_and_alone_keep_todays() -> None:
    names = naming.model_service_names("chat", ["alice/mistral", "bob/mistral", "qwen2.5:14b"])
    assert names["alice/mistral"] != names["bob/mistral"]
    assert all(re.fullmatch(r"chat-mistral-[0-9a-f]{6}", names[m]) for m in ("alice/mistral", "bob/mistral"))
    assert names["qwen2.5:14b"] == "chat-qwen2-5-14b", "a model that clashed with none keeps its name"
    assert naming.model_service_names("chat", ["alice/mistral"]) == {"alice/mistral": "chat-mistral"}
    assert naming.model_service_names("chat", ["Mistral", "mistral"])["Mistral"] != "chat-mistral"
    beside = naming.model_service_names("chat", ["mistral", "alice/mistral"])
    assert beside["mistral"] == "chat-mistral", "adding alice/mistral renames no Service that worked"
    assert re.fullmatch(r"chat-mistral-[0-9a-f]{6}", beside["alice/mistral"])


def test_a_hashed_name_never_takes_another_models_plain_name() -> None:
    """Today a cut, hashed name could equal another model's plain one: both now add a hash."""
    deployment, long_model = "d" * 30, "m" * 40
    hashed = todays_model_service_name(deployment, long_model)  # d…d-m…m-<hash>, cut to fit
    lookalike = hashed[len(deployment) + 1 :]  # a model whose plain name is exactly that
    assert todays_model_service_name(deployment, lookalike) == hashed
    names = naming.model_service_names(deployment, [long_model, lookalike])
    assert len(set(names.values())) == 2 and all(is_dns_1035_label(n) for n in names.values()), names


def test_long_names_cut_to_fit_stay_apart() -> None:
    one, two = "a" * 60 + "x", "a" * 60 + "y"
    assert naming.pod_name(one, ["GPU-a"]) != naming.pod_name(two, ["GPU-a"])
    assert naming.deployment_service_name(one) != naming.deployment_service_name(two)
    assert naming.model_service_names(one, ["m"]) != naming.model_service_names(two, ["m"])
    long_x, long_y = "m" * 50 + "x", "m" * 50 + "y"  # one slug (40 characters): two Services
    names = naming.model_service_names("chat", [long_x, long_y])
    assert names[long_x] != names[long_y]
