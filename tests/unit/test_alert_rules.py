"""The alert rules: ``promtool check rules`` and ``promtool test rules`` pass, every alert is
tested firing and not firing, the series they read are the ones s43_ray/metrics.py exports, and
every ``runbook_url`` (Prometheus and Loki) names a section of docs/runbook.md.

promtool comes from Debian's ``prometheus`` package, which ``.ci/run`` installs: a missing
promtool fails these tests, it does not skip them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from s43_ray import metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "infra" / "alerts"
PROM_RULES = ALERTS / "prometheus-rules.yaml"
PROM_TESTS = ALERTS / "prometheus-rules.test.yaml"
LOKI_RULES = ALERTS / "loki-rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL_TIMEOUT_S = 60
# Labels Ray adds to every series of a user metric (tests/integration/test_metrics.py scrapes
# them); the promtool inputs must carry them, as the real series do.
RAY_LABELS = ("Component", "NodeAddress", "SessionName", "Version", "WorkerId", "otel_scope_name")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, ("promtool not found: install Debian's `prometheus` package "
                  "(apt-get install -y prometheus), as .ci/run does")
    return path


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def alerts(path: Path) -> list[dict[str, Any]]:
    return [rule for rule in rules(path) if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub (and most renderers) give the headings of ``markdown``."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    anchors |= set(re.findall(r'<a (?:id|name)="([^"]+)"', markdown))
    return anchors


def test_promtool_check_rules_passes() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(PROM_RULES)], capture_output=True,
                          text=True, timeout=PROMTOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = subprocess.run([promtool(), "test", "rules", PROM_TESTS.name], cwd=ALERTS,
                          capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_prometheus_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, dict[str, int]] = {}
    for test in load(PROM_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            seen = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            seen["firing" if case.get("exp_alerts") else "quiet"] += 1
    for rule in alerts(PROM_RULES):
        name = rule["alert"]
        assert cases.get(name, {}).get("firing"), f"{name}: no test in which it fires"
        assert cases.get(name, {}).get("quiet"), f"{name}: no test in which it stays quiet"


def test_rules_read_the_series_the_project_exports() -> None:
    text = PROM_RULES.read_text()
    read = set(re.findall(r"\bray_s43_[a-z0-9_]+", text))
    exported = set()
    for name in metrics.EXPORTED_NAMES.values():
        exported |= ({f"{name}_bucket", f"{name}_count", f"{name}_sum"}
                     if name.endswith("_seconds") else {name})
    assert read, "the rules read no s43 series"
    assert read <= exported, f"series no s43 metric exports: {sorted(read - exported)}"


def test_promtool_inputs_are_shaped_like_ray_series() -> None:
    for test in load(PROM_TESTS)["tests"]:
        for item in test["input_series"]:
            series = item["series"]
            name = series.split("{", 1)[0]
            assert name.startswith("ray_s43_"), series
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
            for label in RAY_LABELS:
                assert labels.get(label), (label, series)
            if name.endswith("_bucket"):
                assert labels["le"] == "+Inf" or float(labels["le"]) in \
                    metrics.S3_LATENCY_BUCKETS, series
                assert labels["le"] == "+Inf" or labels["le"] == repr(float(labels["le"])), \
                    f"Ray prints le as a Python float repr: {series}"


@pytest.mark.parametrize("path", [PROM_RULES, LOKI_RULES], ids=["prometheus", "loki"])
def test_every_alert_has_severity_summary_and_a_runbook_section(path: Path) -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    found = alerts(path)
    assert found, f"no alerts in {path.name}"
    for rule in found:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("docs/runbook.md"), (name, url)
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor!r}; expected the alert name"
        assert anchor in anchors, f"{name}: docs/runbook.md has no section #{anchor}"
