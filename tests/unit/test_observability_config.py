"""The observability stack refers only to metrics the server exports, and its files parse."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import REGISTRY

from relayforge.observability import metrics  # noqa: F401  (declares them)
from tests.support import ROOT

OBS = ROOT / "observability"
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES)
    return names


def prefixes() -> tuple[str, ...]:
    """The first word of every exported metric (`http_`, `deliveries_`, `console_`, …): a name
    used in a rule or panel that starts with one of these must be exported, so a new metric
    family is checked without a list to keep up to date."""
    return tuple({family.name.split("_", 1)[0] + "_" for family in REGISTRY.collect()})


def referenced(expr: str) -> set[str]:
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?=\s*[{\[)]|\s*[<>=!]|\s*$)", expr))
    return {w for w in words if "_" in w and w.startswith(prefixes())}


def test_the_prefixes_cover_every_relayforge_metric_family():
    assert {"http_", "jobs_", "deliveries_", "delivery_", "destinations_", "console_",
            "outbox_", "broker_", "consumer_", "db_"} <= set(prefixes())


def test_alert_rules_and_dashboard_use_exported_metrics():
    alerts = yaml.safe_load((OBS / "prometheus" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((OBS / "grafana" / "dashboards" / "relayforge.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = set().union(*(referenced(e) for e in exprs))
    assert used, "no metric names found"
    assert used <= exported(), used - exported()


def test_every_alert_has_a_runbook_section():
    alerts = yaml.safe_load((OBS / "prometheus" / "alerts.yml").read_text())
    runbook = (OBS / "runbook.md").read_text()
    for group in alerts["groups"]:
        for rule in group["rules"]:
            assert f"## {rule['alert']}" in runbook
            assert rule["annotations"]["runbook"] == f"runbook.md#{rule['alert'].lower()}"


def test_every_alert_has_a_promtool_test_case():
    """CI runs `promtool test rules` on these cases; an alert without one is untested."""
    alerts = yaml.safe_load((OBS / "prometheus" / "alerts.yml").read_text())
    cases = yaml.safe_load((OBS / "prometheus" / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in cases["tests"] for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}  # a case that expects it to fire, not only silence
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    assert names <= tested, names - tested


def test_stack_files_parse():
    for path in [*OBS.rglob("*.yml"), *OBS.rglob("*.yaml"), ROOT / "docker-compose.yml"]:
        assert yaml.safe_load(path.read_text()) is not None, path


def test_dashboard_has_variables_readable_legends_and_both_webhook_routes():
    dashboard = json.loads((OBS / "grafana" / "dashboards" / "relayforge.json").read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"source", "tenant"}
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert all(t.get("legendFormat") for t in targets)  # no raw series names as legends
    alerts = yaml.safe_load((OBS / "prometheus" / "alerts.yml").read_text())
    exprs = [t["expr"] for t in targets]
    exprs += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    for expr in exprs:
        if "route=" in expr:  # a webhook-route selector names both routes
            assert "/tenants/[{]tenant_id[}]/webhooks/[{]source[}]" in expr, expr
