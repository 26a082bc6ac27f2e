"""The exchange's metrics (Prometheus text format from ``prometheus_client``): every definition in this module.

The doors' metrics (results received and acknowledged, answers, publish latency) are the adapters' and live
in :mod:`adapters.metrics`; they are re-exported here so that one import names them all. Served by the API at
``GET /metrics`` and, for ``hrx engine`` and the listeners, by a metrics port (``--metrics-port`` or
``HRX_METRICS_PORT``, on ``HRX_METRICS_HOST``, default 127.0.0.1).

No metric carries patient data: label values come from fixed sets (a door, an answer code, a topic and
partition, a role, an outcome), never a resident ID, pseudonym, account, client, report or institution id
(README, "Operations"). That is why ``/metrics`` is open like ``/api/v1/health``: a deployment that exposes the
API beyond its network restricts both at its reverse proxy.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.metrics import (  # noqa: F401 - re-exported: every metric of the project from one module
    ANSWERS,
    DEAD_LETTERS,
    DOORS,
    PUBLISH_FAILURES,
    PUBLISH_SECONDS,
    RESULTS_ACKNOWLEDGED,
    RESULTS_RECEIVED,
    SPOOL_INSTANCES,
    answered,
    serve_metrics,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine as Database

# -- the engine -------------------------------------------------------------------------------------------

ENGINE_EVENTS = Counter(
    "hrx_engine_events", "Events the engine consumed, by what became of them: stored, duplicate (a redelivery, "
    "nothing new), dead_letter", ["outcome"])
ENGINE_BATCH_SECONDS = Histogram(
    "hrx_engine_batch_seconds", "Time to store one polled batch (the SQL transaction and its dead letters)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
ENGINE_ERRORS = Counter(
    "hrx_engine_errors", "Broker or store outages the engine waited out (it resumes from committed offsets)")
CONSUMER_LAG = Gauge(
    "hrx_engine_consumer_lag", "Messages of a partition this engine owns that it has not consumed yet "
    "(high watermark minus position, seen at its last poll)", ["topic", "partition"])
for _outcome in ("stored", "duplicate", "dead_letter"):
    ENGINE_EVENTS.labels(_outcome)

# -- the API ----------------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "hrx_http_requests", "API requests answered, by route template, method and status code",
    ["route", "method", "status"])
CHECK_SECONDS = Histogram(
    "hrx_check_seconds", "Time to answer a recognition check (POST /api/v1/recognition/check), any answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
LOGINS = Counter(
    "hrx_logins", "Login attempts at the token and login endpoints, by grant and outcome (ok, refused, "
    "throttled)", ["grant", "outcome"])
REFUSALS = Counter(
    "hrx_access_refusals", "Requests the access rules refused: 401 unauthenticated, 403 forbidden", ["status"])
BREAK_GLASS_OPENS = Counter(
    "hrx_break_glass_opens", "Break-glass windows opened (emergency access, each audited)")
for _status in ("401", "403"):
    REFUSALS.labels(_status)


class StoreGauges(Collector):
    """Gauges read from the store at scrape time: the outbox backlog (decisions and feedback not yet on the
    broker) and the dead letters kept. A store that does not answer leaves them out of the scrape (and
    ``hrx_store_up`` at 0) rather than failing it."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from exchange.operations import store_backlog

        up = GaugeMetricFamily("hrx_store_up", "Whether the store answered this scrape")
        try:
            backlog = store_backlog(self.database)
        except Exception:  # noqa: BLE001 - a scrape reports the store down instead of failing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        outbox = GaugeMetricFamily("hrx_outbox_backlog", "Decisions and feedback stored but not yet published",
                                   labels=["kind"])
        outbox.add_metric(["decision"], backlog.decisions)
        outbox.add_metric(["feedback"], backlog.feedback)
        yield outbox
        yield GaugeMetricFamily("hrx_dead_letters_stored", "Dead letters kept in the store (until `hrx purge` "
                                "removes resolved ones)", value=backlog.dead_letters)


def store_registry(database: Database) -> CollectorRegistry:
    """A registry of the store's gauges for one API (served beside the process's default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreGauges(database))
    return registry
