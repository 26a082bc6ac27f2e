"""docker/grafana-dashboard.json reads only metrics the exchange exports: every metric name in every panel's
expression is one a process of the exchange serves (exchange/metrics.py, adapters/metrics.py, the store's gauges),
and every label it groups or filters by is one of that metric's labels."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from exchange import metrics
from exchange.store import connect, migrate

DASHBOARD = Path(__file__).parents[1] / "docker" / "grafana-dashboard.json"
_NAME = re.compile(r"\bhrx_[a-z0-9_]+")
_GROUPED = re.compile(r"\bby \(([^)]*)\)")
_MATCHED = re.compile(r"(hrx_[a-z0-9_]+)\{([^}]*)\}")


#: The sample names a metric family of each type serves (Prometheus text format, prometheus_client).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created")}


def _exported(tmp_path: Path) -> dict[str, set[str]]:
    """Every sample name the exchange's processes serve, with its label names: every metric defined in
    exchange.metrics (and the adapters' it re-exports), whether or not it has counted anything yet, and the
    store's gauges as a scrape reads them."""
    found: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            labels = set(metric._labelnames)  # the test's only look inside prometheus_client: no public accessor
            for family in metric.describe():
                for suffix in SUFFIXES[family.type]:
                    found.setdefault(family.name + suffix, set()).update(labels)
    database = connect(f"sqlite:///{tmp_path / 'hrx.db'}")
    migrate(database)
    for family in metrics.store_registry(database).collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_expression_names_an_exported_metric_and_its_labels(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    problems = []
    for expr in exprs:
        names = set(_NAME.findall(expr))
        if not names:
            problems.append(f"{expr}: names no hrx_ metric")
        for name in names - set(exported):
            problems.append(f"{expr}: {name} is not exported")
        labels = set().union(*(exported.get(n, set()) for n in names)) | {"le"}
        for group in _GROUPED.findall(expr):
            for label in (x.strip() for x in group.split(",")):
                if label not in labels:
                    problems.append(f"{expr}: grouped by {label!r}, which {sorted(names)} do not carry")
        for name, matchers in _MATCHED.findall(expr):
            for label in re.findall(r"([a-z_]+)\s*[=!~]", matchers):
                if label not in exported.get(name, set()):
                    problems.append(f"{expr}: {name} has no label {label!r}")
    assert not problems, "\n".join(problems)


def test_the_metrics_of_the_issue_are_on_the_dashboard() -> None:
    text = DASHBOARD.read_text("utf-8")
    for name in ("hrx_door_results_received_total", "hrx_door_results_acknowledged_total", "hrx_door_answers_total",
                 "hrx_publish_seconds_bucket", "hrx_engine_events_total", "hrx_engine_consumer_lag",
                 "hrx_dead_letters_total", "hrx_outbox_backlog", "hrx_check_seconds_bucket", "hrx_logins_total",
                 "hrx_access_refusals_total", "hrx_break_glass_opens_total"):
        assert name in text, name
