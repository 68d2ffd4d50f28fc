"""Validate rendered Kubernetes manifests offline (run inside ``.venv-deploy``).

Built-in kinds are checked by ``kubernetes-validate`` (the Kubernetes OpenAPI schemas it ships,
strict: unknown fields are errors); custom resources by the strict JSON schemas in this folder
(see README.md). A kind with no schema at all is an error, never a silent skip. PromQL in
PrometheusRules and in Grafana dashboards (``--dashboard``) must parse (``promql-parser``).

Usage: ``python k8s/schemas/validate_rendered.py [--dashboard D.json] FILE.yaml ...``
Exit status 1 when any object fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).resolve().parent


def _registry() -> tuple[Registry, dict[tuple[str, str], dict[str, Any]]]:
    """Shared pieces by file name, and each kind's schema keyed by (apiVersion, kind)."""
    registry: Registry = Registry()
    by_kind: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.yaml")):
        schema = yaml.safe_load(path.read_text())
        registry = registry.with_resource(
            path.name, Resource.from_contents(schema, default_specification=DRAFT202012)
        )
        props = schema.get("properties", {})
        if "apiVersion" in props and "kind" in props:
            by_kind[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return registry, by_kind


def promql_errors(expr: str) -> list[str]:
    # Grafana template variables ($namespace, ${datasource}) are not PromQL: substitute a value.
    try:
        promql_parser.parse(re.sub(r"\$\{?\w+\}?", "x", expr))
    except Exception as err:  # the parser raises a plain ValueError/RuntimeError subclass
        return [f"PromQL does not parse ({err}): {expr}"]
    return []


def rule_errors(obj: dict[str, Any]) -> list[str]:
    if obj.get("kind") != "PrometheusRule":
        return []
    exprs = [r["expr"] for g in obj["spec"]["groups"] for r in g["rules"]]
    return [e for expr in exprs for e in promql_errors(str(expr))]


def dashboard_errors(path: Path) -> tuple[int, list[str]]:
    """(number of queries, errors) for one Grafana dashboard JSON."""
    panels = json.loads(path.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    return len(exprs), [e for expr in exprs for e in promql_errors(expr)]


def validate_object(
    obj: dict[str, Any], version: str, registry: Registry, by_kind: dict[tuple[str, str], Any]
) -> list[str]:
    """Error messages for one object (empty when valid)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = by_kind.get(key)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        errors = [
            f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
            for err in validator.iter_errors(obj)
        ]
        return errors or rule_errors(obj)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'/'.join(map(str, err.path)) or '<root>'}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]}: add one to k8s/schemas/"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--kubernetes-version", default="1.37.0")
    parser.add_argument("--dashboard", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    registry, by_kind = _registry()
    failures = checked = 0
    for path in args.files:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            checked += 1
            name = f"{path.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            errors = validate_object(obj, args.kubernetes_version, registry, by_kind)
            failures += bool(errors)
            for error in errors:
                print(f"FAIL {name}: {error}")
    for path in args.dashboard:
        queries, errors = dashboard_errors(path)
        checked += 1
        failures += bool(errors)
        for error in errors:
            print(f"FAIL {path.name}: {error}")
        print(f"{path.name}: {queries} PromQL queries checked")
    print(
        f"validated {checked} objects against Kubernetes {args.kubernetes_version}: "
        f"{checked - failures} passed, {failures} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
