"""``hrx up``, ``hrx engine``, ``hrx serve`` and ``hrx pseudonym``: running the exchange's processes."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from collections.abc import Callable
from typing import TypeVar

import click

from exchange.cli.doors import metrics_port_option, start_metrics
from exchange.config import Settings

F = TypeVar("F", bound=Callable[..., object])


class ListenerAddress(click.ParamType):
    """``HOST:PORT:INSTITUTION`` (an IPv6 host in brackets) as (host, port, institution)."""

    name = "HOST:PORT:INSTITUTION"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, tuple):
            return value
        address, _, institution = str(value).rpartition(":")  # institution ids hold no colon
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or not institution:
            self.fail(f"{value!r}: use HOST:PORT:INSTITUTION, e.g. 0.0.0.0:2575:bj-chaoyang-001", param, ctx)
        return host, int(port), institution


def http_options(command: F) -> F:
    """``--host``, ``--port``, ``--tls-cert`` and ``--tls-key`` of the commands that serve the API."""
    options = [
        click.option("--host", help="address the API binds (default 127.0.0.1, loopback only, or HRX_HTTP_HOST)"),
        click.option("--port", type=int, help="HTTP port (default 8080 or HRX_HTTP_PORT)"),
        click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
                     help="serve HTTPS with this PEM certificate chain (or HRX_TLS_CERT); needs --tls-key"),
        click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
                     help="the certificate's PEM private key, unencrypted, mode 0600 (or HRX_TLS_KEY)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.option("--demo", is_flag=True, help="send the demo data set through the adapters and print a curl")
@click.option("--codes", "codes_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="load items, institutions, mappings and catalogues from DIR instead of the shipped ones")
@http_options
@click.option("--engines", type=click.IntRange(1, 64), default=1, show_default=True,
              help="engine consumer processes (at most the lab topic's partition count are useful)")
@click.option("--hl7", "hl7_listeners", multiple=True, type=ListenerAddress(), metavar="HOST:PORT:INSTITUTION",
              help="also run an HL7 v2 MLLP listener for INSTITUTION on HOST:PORT (repeatable)")
@click.option("--dicom", "dicom_listeners", multiple=True, type=ListenerAddress(),
              metavar="HOST:PORT:INSTITUTION",
              help="also run a DICOM C-STORE SCP (AE title HRX) for INSTITUTION on HOST:PORT (repeatable)")
def up(demo: bool, codes_dir: Path | None, host: str | None, port: int | None, tls_cert: Path | None,
       tls_key: Path | None, engines: int,
       hl7_listeners: tuple[tuple[str, int, str], ...], dicom_listeners: tuple[tuple[str, int, str], ...]) -> None:
    """Start broker (embedded unless HRX_KAFKA_BOOTSTRAP), store, engine, API and listeners."""
    from exchange.up import Listener, settings_with, up as run_up

    # Not from a stack file: `hrx up` is what writes one.
    settings = settings_with(Settings.from_env(stack=False), codes_dir=codes_dir, http_host=host, http_port=port,
                             tls_cert=tls_cert, tls_key=tls_key)
    listeners = ([Listener("hl7", *spec) for spec in hl7_listeners]
                 + [Listener("dicom", *spec) for spec in dicom_listeners])
    try:
        code = run_up(settings, demo=demo, engines=engines, listeners=listeners)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown; everything is stopped
        code = 0
    sys.exit(code)


@click.command()
@metrics_port_option
def engine(metrics_port: int | None) -> None:
    """Run one engine consumer (Kafka result topics → store) until SIGTERM/SIGINT."""
    from exchange import runtime
    from exchange.engine import KeyIds, ResultEngine
    from adapters.publish import Publisher

    settings = Settings.from_env()
    own = runtime.pseudonymizer(settings)  # refuses to start without the exchange's key
    key_ids = KeyIds(own.key_id, frozenset(settings.accepted_key_ids))
    database = runtime.database(settings)  # refuses a store not at this version's schema revision
    bootstrap = runtime.require_bootstrap(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.stop_with_parent(stop)  # started by `hrx up`: do not outlive it
    logging.getLogger("hrx.engine").info("engine: storing events under key id %s%s", key_ids.own,
                                         f" and {', '.join(sorted(key_ids.accepted))}" if key_ids.accepted else "")
    publisher = Publisher(bootstrap, client_id="hrx-engine")
    worker = ResultEngine(bootstrap, database, settings.engine_group, publisher,
                          key_ids=key_ids)
    start_metrics(metrics_port)
    try:
        worker.run(stop)
    finally:
        publisher.close()
        logging.getLogger("hrx.engine").info("engine stopped: %s", worker.stats)


@click.command()
@http_options
def serve(host: str | None, port: int | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Run only the HTTP API against an existing broker and store (production: beside `hrx engine`)."""
    import uvicorn

    from exchange import runtime
    from exchange.api import Context, create_app
    from adapters.publish import Publisher
    from exchange.up import settings_with

    from exchange.broker import ensure_topics
    from exchange.tls import uvicorn_tls

    settings = settings_with(Settings.from_env(), http_host=host, http_port=port, tls_cert=tls_cert,
                             tls_key=tls_key)
    tls = uvicorn_tls(settings)  # refused before anything starts
    pseudonymizer = runtime.pseudonymizer(settings)  # refuses to start without the exchange's key
    database = runtime.database(settings)  # refuses a store not at this version's schema revision
    bootstrap = runtime.require_bootstrap(settings)
    # idempotent; existing topics keep their partitions
    ensure_topics(bootstrap, settings.partitions, settings.topic_replication)
    context = Context(book=runtime.codebook(settings), database=database,
                      pseudonymizer=pseudonymizer, publisher=Publisher(bootstrap),
                      bootstrap=bootstrap, engine_group=settings.engine_group,
                      fhir_max_bytes=settings.fhir_max_bytes, cors_origins=settings.cors_origins,
                      ui_base_url=settings.ui_base_url, ui_frame_ancestors=settings.ui_frame_ancestors,
                      cds_language=settings.cds_language,
                      fhir_validate=settings.fhir_validate)
    # log_config=None: uvicorn logs through the root handlers, where the patient-data guard sits.
    uvicorn.run(create_app(context), host=settings.http_host, port=settings.http_port, access_log=False,
                log_config=None, **tls)


@click.command()
@click.argument("resident_id")
def pseudonym(resident_id: str) -> None:
    """Print the pseudonym of RESIDENT_ID under the configured key (nothing is stored or logged)."""
    from exchange import runtime
    from schemas.resident_id import InvalidResidentId

    try:
        click.echo(runtime.pseudonymizer(Settings.from_env()).pseudonym(resident_id))
    except InvalidResidentId as exc:
        raise click.BadParameter(str(exc), param_hint="RESIDENT_ID") from None
