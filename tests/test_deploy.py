"""The monitoring examples in ``deploy/`` parse and use only metrics syncd exports.

``deploy/prometheus/syncd-alerts.yml`` (alert rules) and ``deploy/grafana/syncd-dashboard.json``
(a Grafana dashboard) are checked in Python always: structure, and every metric name in an alert
``expr`` or a dashboard query exists in :mod:`syncd.metrics` (the names ``/metrics`` serves). Where
``promtool`` is installed (Debian: ``apt-get install prometheus``) the rules also pass
``promtool check rules``, their unit tests ``promtool test rules``, and every dashboard query
parses as PromQL; without it those tests are skipped, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd import metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "syncd-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "syncd-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "syncd-dashboard.json"
EXTERNAL = {"up"}
"""Series Prometheus itself adds for every scrape target."""
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*", "$connector": ".*"}


def exported_series() -> set[str]:
    """Every series name the registry can expose, whether or not a labelled metric has a child yet."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum",
                "_created"), "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (syncd's, the process collector's, ``up``)."""
    found = set()
    for match in _IDENT.finditer(expr):
        name = match.group(0)
        before = expr[:match.start()].rstrip()
        if before.endswith(("{", ",")) and expr[match.end():].lstrip().startswith(("=", "!=", "=~", "!~")):
            continue  # a label matcher's name
        if name.startswith(("syncd_", "process_")) or name in EXTERNAL:
            found.add(name)
    return found


def _rules() -> dict[str, Any]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and set(data) == {"groups"}, "a rules file holds exactly `groups`"
    return data


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, Grafana's variables replaced by plain PromQL."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, plain in _GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, plain)
            out.append((panel["title"], expr))
    return out


def test_the_metric_name_extractor_sees_through_promql() -> None:
    expr = ('max by (connector) (time() - syncd_last_success_timestamp_seconds{job="syncd", connector=~"z.*"}) '
            '> on (connector) (3 * max by (connector) (syncd_poll_interval_seconds > 0)) and up == 1')
    assert metric_names(expr) == {"syncd_last_success_timestamp_seconds", "syncd_poll_interval_seconds", "up"}
    assert "syncd_poll_failures_total" in exported_series()  # a labelled counter with no child yet
    assert {"syncd_vendor_request_seconds_bucket", "syncd_build_info", "process_open_fds"} <= exported_series()


# -- alert rules --------------------------------------------------------------------------------------


def test_alert_rules_have_the_prometheus_structure_and_use_exported_metrics() -> None:
    groups = _rules()["groups"]
    assert isinstance(groups, list) and groups
    exported = exported_series()
    seen_alerts: set[str] = set()
    group_names: set[str] = set()
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] not in group_names
        group_names.add(group["name"])
        assert isinstance(group["rules"], list) and group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            name = rule["alert"]
            assert re.fullmatch(r"Syncd[A-Z][A-Za-z0-9]+", name) and name not in seen_alerts, name
            seen_alerts.add(name)
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
            if "for" in rule:
                assert _DURATION.match(str(rule["for"])), (name, rule["for"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
            assert all(isinstance(v, str) for v in rule["labels"].values()), name
            assert isinstance(rule["annotations"].get("summary"), str), name
            assert set(rule["annotations"]) <= {"summary", "description", "runbook_url"}, name
            used = metric_names(rule["expr"])
            assert used, f"{name}: no metric in {rule['expr']!r}"
            unknown = used - exported - EXTERNAL
            assert not unknown, f"{name} uses metrics syncd does not export: {sorted(unknown)}"
    # what the alerts must watch
    watched = set().union(*(metric_names(r["expr"]) for g in groups for r in g["rules"]))
    for needed in ("syncd_auth_failures_total", "syncd_poll_failures_total", "syncd_last_success_timestamp_seconds",
                   "syncd_outbox_pending", "syncd_inbox_pending", "syncd_dead_letters", "syncd_open_conflicts",
                   "syncd_resync_last_exit_code", "up"):
        assert needed in watched, needed


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus): the Python checks above "
                    "ran, the promtool checks are skipped")
    return tool


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    tool = _promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    tests = subprocess.run([tool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_rule_unit_tests_cover_alerts_that_exist() -> None:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert data["rule_files"] == ["syncd-alerts.yml"]
    alerts = {r["alert"] for g in _rules()["groups"] for r in g["rules"]}
    tested = {case["alertname"] for test in data["tests"] for case in test["alert_rule_test"]}
    assert tested <= alerts and len(tested) >= 6, tested
    for test in data["tests"]:
        for series in test["input_series"]:
            assert metric_names(series["series"].split("{", 1)[0]) <= exported_series() | EXTERNAL, series


# -- Grafana dashboard -----------------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard_over_exported_metrics() -> None:
    dashboard = _dashboard()
    for key in ("title", "uid", "panels", "schemaVersion", "templating", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids: set[int] = set()
    exported = exported_series()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert isinstance(panel["id"], int) and panel["id"] not in ids
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("stat", "timeseries", "table", "gauge", "bargauge"), panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
    for title, expr in _dashboard_queries(dashboard):
        names = metric_names(expr)
        assert names, (title, expr)
        unknown = names - exported - EXTERNAL
        assert not unknown, f"panel {title!r} queries metrics syncd does not export: {sorted(unknown)}"
        used |= names
    for variable in ("instance", "connector"):
        assert metric_names(variables[variable]["definition"]) <= exported, variable
    # every syncd metric is on the dashboard or watched by an alert: the examples keep up with metrics.py
    alerts = set().union(*(metric_names(r["expr"]) for g in _rules()["groups"] for r in g["rules"]))
    families = {f.name for f in metrics.REGISTRY.collect() if f.name.startswith("syncd_")}
    shown = {name for name in used | alerts for family in families if name.startswith(family)}
    missing = {f for f in families if not any(name.startswith(f) for name in shown)}
    assert not missing, f"metrics on neither the dashboard nor an alert: {sorted(missing)}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    tool = _promtool()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"syncd_dashboard:query_{i}", "expr": expr}
        for i, (_title, expr) in enumerate(_dashboard_queries(_dashboard()))
    ]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    check = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
