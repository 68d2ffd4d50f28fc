"""The manifests and the image set only settings the services really read, and wire secrets.

Source-level (no kustomize needed): every ``SERVING_*`` / ``LEARNER_*`` name anywhere in k8s/
(env entries, patches, configMapGenerator literals, ConfigMap data) or in the Dockerfile's ENV
must be a field of ``serving.settings.ServingSettings`` / ``learner.settings.LearnerSettings``
(a typo would otherwise be ignored by pydantic-settings and the default silently used).
Secret fields (``SecretStr``) must come from a Secret, never a ConfigMap or the image.
"""

from __future__ import annotations

import re

import pytest
import yaml

from learner.settings import LearnerSettings
from serving.settings import ServingSettings
from tests.k8s.manifests import K8S, ROOT, find, secret_templates, source_docs, walk

NAME = re.compile(r"^((?:SERVING|LEARNER)_[A-Z0-9_]+)(=|$)")


def settings_env_names() -> set[str]:
    names = {f"SERVING_{f.upper()}" for f in ServingSettings.model_fields}
    return names | {f"LEARNER_{f.upper()}" for f in LearnerSettings.model_fields}


def secret_env_names() -> set[str]:
    return {
        f"SERVING_{name.upper()}"
        for name, field in ServingSettings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def manifest_env_names() -> dict[str, set[str]]:
    """Settings-like names found in k8s/ YAML -> files that mention them."""
    found: dict[str, set[str]] = {}
    for path, doc in source_docs():
        for node in walk(doc):
            strings = list(node) if isinstance(node, (list, dict)) else []
            strings += list(node.values()) if isinstance(node, dict) else []
            for text in strings:
                match = NAME.match(text) if isinstance(text, str) else None
                if match:
                    found.setdefault(match.group(1), set()).add(str(path.relative_to(ROOT)))
    return found


def dockerfile_env_names() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    return set(re.findall(r"^\s*(?:ENV\s+)?((?:SERVING|LEARNER)_[A-Z0-9_]+)=", text, re.M))


def test_manifests_mention_many_settings() -> None:
    # Guards the scanner itself: the base config sets at least these.
    names = manifest_env_names()
    for expected in (
        "SERVING_SPOOL_DIR",
        "SERVING_KAFKA_BOOTSTRAP",
        "LEARNER_DATA_DIR",
        "LEARNER_METRICS_PORT",
        "SERVING_HMAC_KEY",
    ):
        assert expected in names


def test_every_manifest_setting_is_a_real_field() -> None:
    unknown = {
        n: sorted(files)
        for n, files in manifest_env_names().items()
        if n not in settings_env_names()
    }
    assert not unknown, f"not fields of the settings classes: {unknown}"


def test_every_dockerfile_setting_is_a_real_field() -> None:
    names = dockerfile_env_names()
    assert "SERVING_HOST" in names
    assert not names - settings_env_names(), names - settings_env_names()


def test_secret_fields_never_in_configmaps_or_image() -> None:
    secrets = secret_env_names()
    assert secrets >= {"SERVING_API_KEYS", "SERVING_ADMIN_TOKEN", "SERVING_HMAC_KEY"}
    for path, doc in source_docs():
        for gen in (
            doc.get("configMapGenerator", [])
            if doc.get("kind") == "Kustomization" or (doc.get("kind") == "Component")
            else []
        ):
            keys = {lit.split("=", 1)[0] for lit in gen.get("literals", [])}
            assert not keys & secrets, f"{path}: secret settings in a ConfigMap: {keys & secrets}"
        if doc.get("kind") == "ConfigMap":
            assert not set(doc.get("data", {})) & secrets, path
    assert not dockerfile_env_names() & secrets


def test_serving_secrets_wired_from_secret_refs() -> None:
    docs = [d for p, d in source_docs() if p == K8S / "base" / "serving-deployment.yaml"]
    ctr = find(docs, "Deployment", "rlhf-serving")["spec"]["template"]["spec"]["containers"][0]
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in ctr["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert set(refs) >= secret_env_names()
    templates = secret_templates()
    dev = yaml.safe_load((K8S / "overlays" / "dev-cpu" / "kustomization.yaml").read_text())
    dev_secrets = {
        g["name"]: {lit.split("=", 1)[0] for lit in g["literals"]} for g in dev["secretGenerator"]
    }
    for env, ref in refs.items():
        assert ref["key"] in templates.get(ref["name"], set()), f"{env}: no template key"
        assert ref["key"] in dev_secrets.get(ref["name"], set()), f"{env}: not generated in dev"


@pytest.mark.parametrize("component", ["adapter-store-s3"])
def test_object_store_credentials_have_templates(component: str) -> None:
    templates = secret_templates()
    patch = K8S / "components" / component / "credentials.yaml"
    for doc in yaml.safe_load_all(patch.read_text()):
        for ctr in doc["spec"]["template"]["spec"]["containers"]:
            for var in ctr["env"]:
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["key"] in templates[ref["name"]], var["name"]
