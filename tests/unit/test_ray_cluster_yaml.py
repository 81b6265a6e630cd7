"""``ray-cluster.yaml``: a KubeRay ``RayCluster`` whose pods get the store as plain env and the
S3 credentials only from Kubernetes Secrets, never as literals and never through ``runtime_env``.

Each check is a function that returns the problems it finds. The real file must have none, and
every check is also run on a copy with one thing broken (a credential inlined, a limit
dropped, ...), so that a check which cannot fail is caught too.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from s43_ray.config import (
    ENV_ENDPOINT,
    ENV_REGION,
    ENV_STORE,
    env_defaults,
    parse_store_url,
    validate_endpoint,
)
from s43_ray.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "ray-cluster.yaml"
DOCKERFILE = ROOT / "Dockerfile"

Doc = dict[str, Any]
# boto3's standard chain reads these; every Ray container needs both, from a Secret.
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# A variable named like this holds a secret (S43_SSE_C_KEY, RAY_AUTH_TOKEN, *_PASSWORD, ...):
# wherever it appears, it must come from a Secret.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|(?<![A-Z0-9])KEY(?![A-Z0-9])",
                         re.IGNORECASE)
# Plain settings every Ray container carries, under the names s43_ray.config reads.
PLAIN_VARS = (ENV_STORE, ENV_ENDPOINT, ENV_REGION)
# Literal values that look like credentials, anywhere in the file (comments included).
SECRET_LOOKING = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "Scaleway access key": re.compile(r"\bSCW[0-9A-Z]{17}\b"),
    "UUID (a Scaleway secret key)": re.compile(
        r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE),
    "long hex string (a token)": re.compile(r"\b[0-9a-f]{32,}\b", re.IGNORECASE),
    "40-character key (an AWS secret key)": re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40}"),
}
RUNTIME_ENV = re.compile(r"runtime[-_]?env", re.IGNORECASE)
CPU_UNITS = {"m": 1e-3, "": 1.0}
MEMORY_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def load(text: str) -> Doc:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert len(docs) == 1, f"expected one document (the RayCluster), found {len(docs)}"
    doc = docs[0]
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def text() -> str:
    return MANIFEST.read_text()


@pytest.fixture
def doc(text: str) -> Doc:
    return load(text)


def groups(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(name, group spec) for the head group and every worker group."""
    yield "head", doc["spec"]["headGroupSpec"]
    for group in doc["spec"].get("workerGroupSpecs") or []:
        yield str(group.get("groupName")), group


def containers(doc: Doc, *, init: bool = False) -> Iterator[tuple[str, Doc]]:
    """("group/container", container) for every container of every group's pod template."""
    kinds = ("containers", "initContainers") if init else ("containers",)
    for name, group in groups(doc):
        pod = group["template"]["spec"]
        for kind in kinds:
            for c in pod.get(kind) or []:
                yield f"{name}/{c.get('name')}", c


def quantity(value: object, units: dict[str, float] | dict[str, int]) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if not match or match.group(2) not in units:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return float(match.group(1)) * units[match.group(2)]


# --- the checks ------------------------------------------------------------------------------

def resource_problems(doc: Doc) -> list[str]:
    """Every container requests and limits CPU and memory, requests <= limits; a worker's Ray
    CPUs (num-cpus) fit its CPU limit; rayStartParams are strings (KubeRay's schema)."""
    problems = []
    for where, c in containers(doc):
        res = c.get("resources") or {}
        missing = [f"{where}: no {kind}.{resource}" for kind in ("requests", "limits")
                   for resource in ("cpu", "memory") if resource not in (res.get(kind) or {})]
        problems += missing
        if missing:
            continue
        for resource, units in (("cpu", CPU_UNITS), ("memory", MEMORY_UNITS)):
            if quantity(res["requests"][resource], units) > quantity(res["limits"][resource],
                                                                     units):
                problems.append(f"{where}: {resource} request above its limit")
    for name, group in groups(doc):
        params = group.get("rayStartParams") or {}
        problems += [f"{name}: rayStartParams {k}={v!r} is not a string"
                     for k, v in params.items() if not isinstance(v, str)]
        limit = (group["template"]["spec"]["containers"][0].get("resources") or {}).get(
            "limits", {}).get("cpu")
        if "num-cpus" in params and limit is not None and \
                float(params["num-cpus"]) > quantity(limit, CPU_UNITS):
            problems.append(f"{name}: num-cpus {params['num-cpus']} above the CPU limit {limit}")
    return problems


def credential_problems(doc: Doc) -> list[str]:
    """Every container takes AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from a Secret
    (``valueFrom.secretKeyRef``, or ``envFrom.secretRef`` when not listed in ``env``), and any
    secret-named variable in any container (init containers too) comes from a Secret."""
    problems = []
    for where, c in containers(doc, init=True):
        env = {e["name"]: e for e in c.get("env") or []}
        for name, entry in env.items():
            if name in CREDENTIAL_VARS or SECRET_NAME.search(name):
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
                if "value" in entry or not ref.get("name") or not ref.get("key"):
                    problems.append(f"{where}: {name} is not taken from a Secret "
                                    "(valueFrom.secretKeyRef)")
    for where, c in containers(doc):
        env_names = {e["name"] for e in c.get("env") or []}
        from_secret = any("secretRef" in source for source in c.get("envFrom") or [])
        problems += [f"{where}: {name} missing; expected valueFrom.secretKeyRef or "
                     "envFrom.secretRef" for name in CREDENTIAL_VARS
                     if name not in env_names and not from_secret]
    return problems


def plain_env_problems(doc: Doc) -> list[str]:
    """Every container carries the store, endpoint and region as plain values that the
    project's own config accepts."""
    problems = []
    for where, c in containers(doc):
        env = {e["name"]: e for e in c.get("env") or []}
        missing = [f"{where}: {name} missing or not a plain value" for name in PLAIN_VARS
                   if "value" not in env.get(name, {})]
        problems += missing
        if missing:
            continue
        plain = {name: str(env[name]["value"]) for name in PLAIN_VARS}
        defaults = env_defaults(plain)
        try:
            parse_store_url(str(defaults.store))
            validate_endpoint(str(defaults.endpoint_url))
        except InputError as exc:
            problems.append(f"{where}: {exc}")
        if not str(defaults.endpoint_url).startswith("https://"):
            problems.append(f"{where}: endpoint {defaults.endpoint_url} is not https")
    return problems


def _nodes(node: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """(path, value) for every key and every scalar in a parsed document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, str(key)), str(key)
            yield from _nodes(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, (*path, str(i)))
    else:
        yield path, node


def runtime_env_problems(doc: Doc) -> list[str]:
    """No runtime_env (a ``runtimeEnv``/``runtime_env`` field, or a ``--runtime-env-json``
    string) sets env vars that are secret-named: Ray shows runtime_env on its dashboard."""
    problems = []
    for path, value in _nodes(doc):
        text = value if isinstance(value, str) else json.dumps(value)
        context = " ".join((*path, text))
        if RUNTIME_ENV.search(context) and "env_vars" in context and SECRET_NAME.search(text):
            problems.append(f"{'.'.join(path)}: a secret-named variable in runtime_env "
                            f"env_vars: {text!r}")
    return problems


def literal_problems(text: str) -> list[str]:
    """No line of the file (comments included) holds something that looks like a credential."""
    return [f"line {n}: {kind}" for n, line in enumerate(text.splitlines(), 1)
            for kind, pattern in SECRET_LOOKING.items() if pattern.search(line)]


# --- the real file ---------------------------------------------------------------------------

def test_manifest_is_one_kuberay_raycluster(doc: Doc) -> None:
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    head = doc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["template"]["spec"]["containers"]
    workers = doc["spec"]["workerGroupSpecs"]
    assert len(workers) >= 1
    for group in workers:
        assert group["groupName"] and group["template"]["spec"]["containers"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_every_group_requests_and_limits_cpu_and_memory(doc: Doc) -> None:
    assert resource_problems(doc) == []


def test_every_container_gets_the_store_settings_as_plain_env(doc: Doc) -> None:
    assert plain_env_problems(doc) == []
    stores = {e["value"] for _, c in containers(doc) for e in c["env"] if e["name"] == ENV_STORE}
    assert len(stores) == 1, f"head and workers must use the same store: {stores}"


def test_every_container_takes_the_s3_credentials_from_a_secret(doc: Doc) -> None:
    assert credential_problems(doc) == []
    assert len(list(containers(doc))) >= 2  # the head and at least one worker were checked


def test_no_runtime_env_carries_credentials(doc: Doc) -> None:
    assert runtime_env_problems(doc) == []


def test_no_secret_looking_literal_in_the_file(text: str) -> None:
    assert literal_problems(text) == []


def test_dashboard_requires_a_token(doc: Doc) -> None:
    """Whoever reaches the dashboard can run code with the pods' S3 credentials."""
    assert doc["spec"]["authOptions"]["mode"] == "token"
    for where, c in containers(doc, init=True):
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        assert env.get("RAY_AUTH_MODE") in (None, "token"), where


def test_image_is_built_from_the_repo_and_matches_ray_version(doc: Doc) -> None:
    images = {c["image"] for _, c in containers(doc)}
    assert len(images) == 1, f"head and workers must run the same image: {images}"
    assert not next(iter(images)).startswith("rayproject/"), "a stock image has no s43_ray"
    base = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\S+?)-py\d+$", DOCKERFILE.read_text(),
                     re.MULTILINE)
    assert base, "Dockerfile: expected ARG RAY_IMAGE=rayproject/ray:<version>-py<NN>"
    assert base.group(1) == doc["spec"]["rayVersion"]
    installed = importlib.metadata.version("ray")
    assert doc["spec"]["rayVersion"].split(".")[0] == installed.split(".")[0]


# --- each check fails when it should ---------------------------------------------------------

def _env(doc: Doc, where: str) -> list[Doc]:
    env: list[Doc] = dict(containers(doc))[where]["env"]
    return env


def _set(env: list[Doc], name: str, entry: Doc) -> None:
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, **entry}]


def inline_secret_in_worker(doc: Doc) -> None:
    worker = next(w for w in containers(doc) if not w[0].startswith("head/"))[0]
    _set(_env(doc, worker), "AWS_SECRET_ACCESS_KEY", {"value": "not-from-a-secret"})


def drop_credentials_from_head(doc: Doc) -> None:
    head = next(iter(containers(doc)))[0]
    _env(doc, head)[:] = [e for e in _env(doc, head) if e["name"] != "AWS_ACCESS_KEY_ID"]


def credentials_from_a_config_map(doc: Doc) -> None:
    head = next(iter(containers(doc)))[0]
    _set(_env(doc, head), "AWS_SECRET_ACCESS_KEY", {"valueFrom": {"configMapKeyRef": {
        "name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}})


def literal_sse_c_key(doc: Doc) -> None:
    head = next(iter(containers(doc)))[0]
    _set(_env(doc, head), "S43_SSE_C_KEY", {"value": "a-literal-key"})


def literal_token_in_init_container(doc: Doc) -> None:
    doc["spec"]["headGroupSpec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "image": "busybox", "env": [{"name": "RAY_AUTH_TOKEN", "value": "x"}]}]


@pytest.mark.parametrize("breakage", [inline_secret_in_worker, drop_credentials_from_head,
                                      credentials_from_a_config_map, literal_sse_c_key,
                                      literal_token_in_init_container])
def test_credential_check_catches(doc: Doc, breakage: Callable[[Doc], None]) -> None:
    broken = copy.deepcopy(doc)
    breakage(broken)
    assert credential_problems(broken)


def test_credential_check_accepts_env_from_a_secret(doc: Doc) -> None:
    changed = copy.deepcopy(doc)
    for _, c in containers(changed):
        c["env"] = [e for e in c["env"] if e["name"] not in CREDENTIAL_VARS]
        c["envFrom"] = [{"secretRef": {"name": "s43-s3-credentials"}}]
    assert credential_problems(changed) == []


@pytest.mark.parametrize("where", ["resources", "num-cpus"])
def test_resource_check_catches(doc: Doc, where: str) -> None:
    broken = copy.deepcopy(doc)
    group = broken["spec"]["workerGroupSpecs"][0]
    if where == "resources":
        del group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    else:
        group["rayStartParams"]["num-cpus"] = 64
    assert resource_problems(broken)


@pytest.mark.parametrize("change", ["missing", "from-secret", "bad-store", "http"])
def test_plain_env_check_catches(doc: Doc, change: str) -> None:
    broken = copy.deepcopy(doc)
    env = _env(broken, next(iter(containers(broken)))[0])
    if change == "missing":
        env[:] = [e for e in env if e["name"] != ENV_ENDPOINT]
    elif change == "from-secret":
        _set(env, ENV_STORE, {"valueFrom": {"secretKeyRef": {"name": "s", "key": "store"}}})
    elif change == "bad-store":
        _set(env, ENV_STORE, {"value": "/tmp/predictions"})
    else:
        _set(env, ENV_ENDPOINT, {"value": "http://s3.fr-par.scw.cloud"})
    assert plain_env_problems(broken)


@pytest.mark.parametrize("form", ["field", "yaml-string", "flag"])
def test_runtime_env_check_catches(doc: Doc, form: str) -> None:
    broken = copy.deepcopy(doc)
    if form == "field":
        broken["spec"]["runtimeEnv"] = {"env_vars": {"AWS_SECRET_ACCESS_KEY": "x"}}
    elif form == "yaml-string":  # as a RayJob's runtimeEnvYAML carries it
        broken["spec"]["runtimeEnvYAML"] = "env_vars:\n  S43_SSE_C_KEY: x\n"
    else:
        head = broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        head["args"] = ["ray job submit --runtime-env-json "
                        "'{\"env_vars\": {\"AWS_SECRET_ACCESS_KEY\": \"x\"}}' -- s43-ray run"]
    assert runtime_env_problems(broken)


@pytest.mark.parametrize("leak", [
    "AKIAIOSFODNN7EXAMPLE",
    "SCWXXXXXXXXXXXXXXXXX",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "4c1e0f4e-8d3a-4c5e-9f1a-2b3c4d5e6f70",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
])
def test_literal_check_catches_a_credential_even_in_a_comment(text: str, leak: str) -> None:
    assert literal_problems(f"{text}\n# export AWS_SECRET_ACCESS_KEY={leak}\n")
