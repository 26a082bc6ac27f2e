"""The adapters' metrics (Prometheus, ``prometheus_client``'s default registry): every door's counts in one place.

What they count never names a patient, a resident ID, a pseudonym, an account or a report: the labels take
only the values listed here (a door, an answer code, a topic), so the metrics can be scraped without the
access rules that guard patient data (README, "Operations"). The exchange's own metrics are in
:mod:`exchange.metrics`, which re-exports these.

Doors are named as the event envelope names its adapter (``source.adapter`` in schemas/: ``fhir``,
``hl7v2``, ``dicom``, ``csv``). Answers are each door's own: HL7 ``AA``/``AE``/``AR`` (``CA``/``CE``/``CR``),
DICOM status words as ``0x0000``/``0xA700``/…, HTTP status codes (``200``, ``409``, ``503`` …), and for a CSV
file ``published`` or ``refused`` per report.
"""
from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Doors, as ``source.adapter`` of the result events.
DOORS = ("fhir", "hl7v2", "dicom", "csv")

RESULTS_RECEIVED = Counter(
    "hrx_door_results_received", "Reports a door received and handed to the pipeline (before any check)",
    ["door"])
RESULTS_ACKNOWLEDGED = Counter(
    "hrx_door_results_acknowledged", "Result events the broker acknowledged (acks=all), per door", ["door"])
ANSWERS = Counter(
    "hrx_door_answers", "Answers a door gave its sender, per answer code (HL7 ACK code, DICOM status, HTTP "
    "status, CSV published/refused)", ["door", "answer"])
PUBLISH_SECONDS = Histogram(
    "hrx_publish_seconds", "Time from sending a door's events to the broker's acknowledgement of all of them",
    ["door"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
PUBLISH_FAILURES = Counter(
    "hrx_publish_failures", "Publishes the broker did not acknowledge (the door refused, the sender retries)",
    ["door"])
DEAD_LETTERS = Counter(
    "hrx_dead_letters", "Dead letters published to hr.deadletter.v1, by who refused the event: a door (csv, "
    "dicom, …) or the engine", ["by"])
SPOOL_INSTANCES = Counter(
    "hrx_dicom_spool_instances", "DICOM instances committed to the spool (new, not resends)")

for _door in DOORS:  # every series exists from the start, at 0: a rate over a missing series is no rate
    RESULTS_RECEIVED.labels(_door)
    RESULTS_ACKNOWLEDGED.labels(_door)
    PUBLISH_SECONDS.labels(_door)
    PUBLISH_FAILURES.labels(_door)


def answered(door: str, answer: str | int) -> None:
    """Count one answer of ``door``; DICOM status words are written ``0x%04X``."""
    text = f"0x{answer:04X}" if door == "dicom" and isinstance(answer, int) else str(answer or "none")
    ANSWERS.labels(door, text).inc()


#: The environment setting of a listener's or engine's metrics port (``--metrics-port`` wins).
METRICS_PORT_ENV = "HRX_METRICS_PORT"
#: The address the metrics port binds (loopback unless an operator opens it to a scraper).
METRICS_HOST_ENV = "HRX_METRICS_HOST"


def serve_metrics(port: int | None, host: str | None = None) -> int | None:
    """Start ``prometheus_client``'s HTTP server for this process on ``host:port`` (default: ``HRX_METRICS_PORT``
    on ``HRX_METRICS_HOST``, else 127.0.0.1); nothing when no port is set. Returns the port serving (0 asks
    the system for a free one)."""
    if port is None:
        text = os.environ.get(METRICS_PORT_ENV, "").strip()
        if not text:
            return None
        if not text.isdigit() or int(text) > 65535:
            raise ValueError(f"{METRICS_PORT_ENV} must be a port number, not {text!r}")
        port = int(text)
    address = host or os.environ.get(METRICS_HOST_ENV) or "127.0.0.1"
    try:
        server, _ = start_http_server(port, addr=address)
    except OSError as exc:  # e.g. the port of another process: metrics are not worth refusing results for
        log.error("metrics: cannot serve on %s:%d (%s): this process runs without a metrics port", address, port,
                  exc)
        return None
    bound = int(server.server_port)
    log.info("metrics: Prometheus text format at http://%s:%d/metrics", address, bound)
    return bound
