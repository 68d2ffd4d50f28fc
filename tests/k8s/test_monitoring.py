"""Alerts and the Grafana dashboard query metrics the code really exports.

Every ``rlhf_serving_*`` / ``rlhf_learner_*`` name used in the PrometheusRule or the dashboard
must be defined in ``serving/`` or ``learner/`` (histograms may add ``_bucket``/``_sum``/
``_count``); a renamed metric would otherwise leave an alert that can never fire. Also checks
that the alerts the runbook documents exist and each has a runbook section.
"""

from __future__ import annotations

import json
import re

import yaml

from tests.k8s.manifests import K8S, ROOT

MONITORING = K8S / "components" / "monitoring"
METRIC = re.compile(r"\brlhf_(?:serving|learner)_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def defined_metrics() -> set[str]:
    names: set[str] = set()
    for package in ("serving", "learner"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(
                re.findall(r"[\"'](rlhf_(?:serving|learner)_[a-z0-9_]+)[\"']", path.read_text())
            )
    return names


def _base(name: str, defined: set[str]) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in defined:
            return name.removesuffix(suffix)
    return name


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def test_alerts_use_defined_metrics() -> None:
    defined = defined_metrics()
    assert "rlhf_serving_events_dropped_total" in defined
    used = {_base(m, defined) for rule in rules() for m in METRIC.findall(str(rule["expr"]))}
    assert used, "no rlhf metrics in the alerts"
    assert not used - defined, f"alerts query undefined metrics: {sorted(used - defined)}"


def test_dashboard_uses_defined_metrics_and_covers_both_services() -> None:
    defined = defined_metrics()
    dash = json.loads((MONITORING / "dashboards" / "rlhf-service.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {_base(m, defined) for e in exprs for m in METRIC.findall(e)}
    assert not used - defined, f"dashboard queries undefined metrics: {sorted(used - defined)}"
    assert any(m.startswith("rlhf_serving_") for m in used)
    assert any(m.startswith("rlhf_learner_") for m in used)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_required_alerts_exist_and_have_runbook_sections() -> None:
    names = {str(rule["alert"]) for rule in rules()}
    required = {
        "RlhfServingEventsDropped",  # events dropped > 0
        "RlhfServingSpoolNotDraining",  # spool growing
        "RlhfServingNotReady",  # readiness failing
        "RlhfLearnerLagging",  # learner lag
        "RlhfLearnerGateFailures",  # gate failures
        "RlhfNoAdapterPublished",  # no adapter published in N hours
    }
    assert required <= names
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for rule in rules():
        assert f"### {rule['alert']}" in runbook, rule["alert"]
        anchor = str(rule["alert"]).lower()
        assert str(rule["annotations"]["runbook_url"]).endswith(f"#{anchor}")  # type: ignore[index]
