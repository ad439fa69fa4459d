"""Static checks of the compose file's observability profile: Prometheus scrapes exactly
the stack's components where compose runs them, and the provisioned Grafana dashboard
queries only metrics the project really exports (found in its source, as declared)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.launcher import stack_components
from paxkit.config import REPO_ROOT
from tests.unit.test_compose import COMPOSE_FILE, OBSERVABILITY, bind_port

pytestmark = pytest.mark.unit

PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "paxmart.json"
SOURCES = ("paxkit", "gateway", "coordinator", "services")
# A metric's declaration, and the series Prometheus sees for it.
SERIES = {
    "Counter": ("_total",),
    "CounterMetricFamily": ("_total",),
    "Histogram": ("_bucket", "_sum", "_count"),
    "Summary": ("_sum", "_count"),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
}
METRIC = re.compile(r"\bpaxmart_[a-z0-9_]+")


def declared(call: ast.Call) -> tuple[str, str] | None:
    """(kind, name) of a metric declared by this call, if it is one."""
    func = call.func
    kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if kind not in SERIES or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return kind, first.value
    return None


def exported_series() -> set[str]:
    series: set[str] = set()
    for folder in SOURCES:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                found = declared(node) if isinstance(node, ast.Call) else None
                if found is not None:
                    kind, name = found
                    base = name.removesuffix("_total") if "Counter" in kind else name
                    series |= {base + suffix for suffix in SERIES[kind]}
    return series


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text())["services"])


def test_the_metric_search_finds_what_the_project_declares():
    series = exported_series()
    assert {
        "paxmart_transactions_total",
        "paxmart_http_request_seconds_bucket",
        "paxmart_gateway_cache_total",
        "paxmart_queue_messages",
        "paxmart_dead_letters",
        "paxmart_audit_ok",
    } <= series
    assert "paxmart_transactions_total_total" not in series


def test_the_dashboard_queries_only_metrics_the_project_exports():
    series, queries = exported_series(), dashboard_queries()
    assert len(queries) >= 10
    for expr in queries:
        named = set(METRIC.findall(expr))
        assert named, f"a query naming no paxmart metric: {expr}"
        assert named <= series, f"{expr}: not exported: {named - series}"


def test_the_dashboard_uses_the_provisioned_datasource():
    source = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {datasource["uid"]}


def test_prometheus_scrapes_every_component_where_compose_runs_it(services):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )
    wanted = {f"{c.name}:{bind_port(services[c.name])}" for c in stack_components()}
    assert targets == wanted


def test_the_profile_is_optional_and_its_files_are_in_the_repo(services):
    profiled = {name for name, svc in services.items() if svc.get("profiles")}
    assert profiled == OBSERVABILITY
    for name in OBSERVABILITY:
        assert services[name]["profiles"] == ["observability"]
        for volume in services[name].get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "paxmart.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert Path(REPO_ROOT / mounts[folder]).resolve() == DASHBOARD.parent.resolve()
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
