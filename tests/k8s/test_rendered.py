"""Rendered overlays: settings accepted by the settings classes, secrets, ports, probes, volumes.

Renders every overlay with ``kubectl kustomize`` from ``.venv-deploy`` and checks what a pod
would actually get: the resolved env of each container must build a valid settings object
(the same validation the service runs at start-up), every secret reference must be satisfiable,
and ports, probe paths and mount paths must agree with the settings the service reads.
Also runs ``scripts/validate_deploy.sh`` (lint, schemas, security scan) end to end.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from learner import cli as learner_cli
from learner.settings import LearnerSettings
from serving.settings import ServingSettings
from tests.k8s.manifests import (
    KUBECTL,
    OVERLAYS,
    ROOT,
    Doc,
    container,
    find,
    render,
    resolved_env,
    secret_templates,
)

pytestmark = pytest.mark.skipif(
    not KUBECTL.exists(),
    reason="[deploy tier] .venv-deploy missing: run scripts/validate_deploy.sh --setup-only",
)

_PLACEHOLDER = "x" * 32  # what ops put in a template secret: any >= 16-char value


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(request.param)


def _secret_value(docs: list[Doc], name: str, key: str) -> str:
    # secretGenerator names carry a content hash; kustomize rewrites the references to match.
    generated = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    if generated:
        return base64.b64decode(generated[0]["data"][key]).decode()
    assert key in secret_templates().get(name, set()), f"{name}/{key}: no Secret, no template"
    return _PLACEHOLDER if not key.endswith("api-keys") else f'["{_PLACEHOLDER}"]'


def _env_for(docs: list[Doc], ctr: Doc, prefix: str, tmp_path: Path) -> dict[str, str]:
    values, secrets = resolved_env(docs, ctr)
    env = {k: v for k, v in values.items() if k.startswith(prefix)}
    env.update({k: _secret_value(docs, *ref) for k, ref in secrets.items() if k.startswith(prefix)})
    model_dir = env.get(f"{prefix}MODEL_DIR", "embedded")
    if model_dir != "embedded":
        # The mounted model volume does not exist here: stand in a minimal model directory.
        (tmp_path / "config.json").write_text("{}")
        env[f"{prefix}MODEL_DIR"] = str(tmp_path)
    return env


def _build(cls: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith(("SERVING_", "LEARNER_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


def _assert_dirs_writable(settings: Any, ctr: Doc) -> None:
    """Every local directory setting (except the read-only model) lies on a writable volume:
    the root filesystem is read-only, so a relative default would fail at run time."""
    writable = [m["mountPath"] for m in ctr["volumeMounts"] if not m.get("readOnly")]
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        if not field.endswith("_dir") or field == "model_dir" or "://" in str(value):
            continue
        assert str(value).startswith("/"), f"{field}={value!r} is relative to the read-only root"
        assert any(str(value).startswith(m.rstrip("/") + "/") or value == m for m in writable), (
            f"{field}={value!r} is not on a writable volume"
        )


def test_serving_env_builds_valid_settings(
    rendered: tuple[str, list[Doc]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlay, docs = rendered
    ctr = container(docs, "Deployment", "rlhf-serving", "serving")
    settings = _build(ServingSettings, _env_for(docs, ctr, "SERVING_", tmp_path), monkeypatch)
    assert settings.require_auth, overlay
    assert settings.api_keys and settings.host == "0.0.0.0"
    assert [p["containerPort"] for p in ctr["ports"]] == [settings.port]
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    assert settings.spool_dir in mounts, "the spool must be on its own volume"
    _assert_dirs_writable(settings, ctr)
    if "://" not in settings.adapter_store:
        assert mounts[settings.adapter_store]["readOnly"] is True
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["startupProbe"]["failureThreshold"] * ctr["startupProbe"]["periodSeconds"] >= 300
    # The pod must outlive preStop + the server's own drain, or in-flight answers and the
    # event flush are cut off by SIGKILL.
    grace = find(docs, "Deployment", "rlhf-serving")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    pre_stop = ctr["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert grace >= pre_stop + settings.graceful_timeout_seconds + 10
    assert ctr["command"] == ["serve"]
    if overlay.startswith("prod-gpu"):
        assert settings.engine == "vllm"
        assert ctr["resources"]["limits"]["nvidia.com/gpu"] == "1"
    else:
        assert settings.engine == "transformers"


def test_learner_env_builds_valid_settings(
    rendered: tuple[str, list[Doc]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlay, docs = rendered
    sts = find(docs, "StatefulSet", "rlhf-learner")
    assert sts["spec"]["replicas"] == 1, "the learner is the single writer"
    ctr = container(docs, "StatefulSet", "rlhf-learner", "learner")
    settings = _build(LearnerSettings, _env_for(docs, ctr, "LEARNER_", tmp_path), monkeypatch)
    assert [p["containerPort"] for p in ctr["ports"]] == [settings.metrics_port]
    _assert_dirs_writable(settings, ctr)
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert mounts[settings.data_dir] in claims, "training store + checkpoints on the PVC"
    if "://" not in settings.adapter_store:
        assert settings.adapter_store in mounts
    command = ctr["command"]
    if overlay in ("prod-gpu-multigpu", "prod-gpu-fsdp"):
        assert settings.train_launcher.split()[:2] == ["accelerate", "launch"]
        assert "--num_processes=4" in settings.train_launcher.split()
        assert ctr["resources"]["limits"]["nvidia.com/gpu"] == "4"
    # Sharded only where asked; a DDP launch stays DDP (its --multi_gpu would beat the file).
    assert settings.distributed == ("fsdp" if overlay == "prod-gpu-fsdp" else "ddp")
    assert command[0] == "learner"
    assert learner_cli.build_parser().parse_args(command[1:]).command == "run"


def test_serving_and_learner_agree(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    serving, _ = resolved_env(docs, container(docs, "Deployment", "rlhf-serving", "serving"))
    learner, _ = resolved_env(docs, container(docs, "StatefulSet", "rlhf-learner", "learner"))
    for field in (
        "KAFKA_BOOTSTRAP",
        "TOPIC_INTERACTIONS",
        "TOPIC_FEEDBACK",
        "TOPIC_ADAPTERS",
        "ADAPTER_STORE",
        "ADAPTER_NAME",
        "MODEL_NAME",
    ):
        assert serving[f"SERVING_{field}"] == learner[f"LEARNER_{field}"], field


def test_kafka_topics_and_access_match_settings(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    serving, _ = resolved_env(docs, container(docs, "Deployment", "rlhf-serving", "serving"))
    kafka_egress = find(docs, "NetworkPolicy", "allow-app-to-kafka")["spec"]["egress"][0]
    if not topics:
        # External Kafka (components/kafka-external): topics are created by ops (runbook);
        # the egress policy must allow the bootstrap port.
        port = int(serving["SERVING_KAFKA_BOOTSTRAP"].split(",")[0].rsplit(":", 1)[1])
        assert port in {p["port"] for p in kafka_egress["ports"]}
        assert "ipBlock" in kafka_egress["to"][0]
        return
    assert set(topics) == {
        serving["SERVING_TOPIC_INTERACTIONS"],
        serving["SERVING_TOPIC_FEEDBACK"],
        serving["SERVING_TOPIC_ADAPTERS"],
    }
    assert topics[serving["SERVING_TOPIC_ADAPTERS"]]["config"]["cleanup.policy"] == "compact"
    assert "retention.ms" in topics[serving["SERVING_TOPIC_FEEDBACK"]]["config"]
    bootstrap = serving["SERVING_KAFKA_BOOTSTRAP"]
    assert bootstrap.startswith(find(docs, "Kafka", "rlhf-kafka")["metadata"]["name"])


def test_no_autoscaler_on_the_learner(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    targets = {
        d["spec"]["scaleTargetRef"]["kind"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert targets == {"Deployment"}


def test_validate_script_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "validate_deploy.sh"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "validate_deploy: all checks passed" in result.stdout
    assert {p.name for p in tmp_path.glob("*.yaml")} == {f"{o}.yaml" for o in OVERLAYS}
    assert yaml.safe_load_all((tmp_path / "prod-gpu.yaml").read_text())


def _gib(quantity: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "Ti": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "rlhf-serving"), ("StatefulSet", "rlhf-learner")]
)
def test_emptydirs_fit_the_ephemeral_storage_limit(
    rendered: tuple[str, list[Doc]], kind: str, name: str
) -> None:
    # Disk-backed emptyDirs count against the pod's ephemeral-storage limit: if their size
    # limits add up to more, the kubelet evicts the pod before any emptyDir is full.
    _, docs = rendered
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    disk = [v["emptyDir"] for v in spec["volumes"] if "emptyDir" in v]
    assert all("sizeLimit" in d for d in disk), "every emptyDir needs a sizeLimit"
    total = sum(_gib(d["sizeLimit"]) for d in disk if d.get("medium") != "Memory")
    limit = sum(_gib(c["resources"]["limits"]["ephemeral-storage"]) for c in spec["containers"])
    assert total <= limit, f"{kind}/{name}: emptyDirs {total} GiB > limit {limit} GiB"


def test_ingress_exposes_only_the_public_api(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    paths = {
        (p["path"], p["pathType"])
        for rule in find(docs, "Ingress", "rlhf-serving")["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths == {("/v1", "Prefix"), ("/web", "Prefix"), ("/", "Exact")}
