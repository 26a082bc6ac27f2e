"""``hrx up``, ``hrx engine``, ``hrx serve`` and ``hrx pseudonym``: running the exchange's processes."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click
import orjson

from exchange.config import Settings


@click.command()
@click.option("--demo", is_flag=True, help="send the demo data set through the adapters and print a curl")
@click.option("--codes", "codes_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="load items, institutions, mappings and catalogues from DIR instead of the shipped ones")
@click.option("--port", type=int, help="HTTP port (default 8080 or HRX_HTTP_PORT)")
@click.option("--engines", type=click.IntRange(1, 64), default=1, show_default=True,
              help="engine consumer processes (at most the lab topic's partition count are useful)")
def up(demo: bool, codes_dir: Path | None, port: int | None, engines: int) -> None:
    """Start broker (embedded unless HRX_KAFKA_BOOTSTRAP), store, engine and API."""
    from exchange.up import settings_with, up as run_up

    settings = settings_with(Settings.from_env(), codes_dir=codes_dir, http_port=port)
    try:
        code = run_up(settings, demo=demo, engines=engines)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown; everything is stopped
        code = 0
    sys.exit(code)


@click.command()
def engine() -> None:
    """Run one engine consumer (Kafka result topics → store) until SIGTERM/SIGINT."""
    from exchange import runtime
    from exchange.engine import ResultEngine
    from adapters.publish import Publisher

    settings = Settings.from_env()
    bootstrap = runtime.require_bootstrap(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = int(os.environ.get("HRX_PARENT_PID", "0"))
    if parent:
        # Started by `hrx up`: do not outlive it if it is killed without a chance to stop us.
        def _watch() -> None:
            while not stop.wait(1.0):
                if os.getppid() != parent:
                    stop.set()
        threading.Thread(target=_watch, daemon=True).start()
    publisher = Publisher(bootstrap, client_id="hrx-engine")
    worker = ResultEngine(bootstrap, runtime.database(settings), settings.engine_group, publisher)
    try:
        worker.run(stop)
    finally:
        publisher.close()
        logging.getLogger("hrx.engine").info("engine stopped: %s", worker.stats)


@click.command()
@click.option("--port", type=int)
def serve(port: int | None) -> None:
    """Run only the HTTP API against an existing broker and store (production: beside `hrx engine`)."""
    import uvicorn

    from exchange import runtime
    from exchange.api import Context, create_app
    from adapters.publish import Publisher
    from exchange.up import settings_with

    from exchange.broker import ensure_topics

    settings = settings_with(Settings.from_env(), http_port=port)
    bootstrap = runtime.require_bootstrap(settings)
    ensure_topics(bootstrap, settings.partitions)  # idempotent; existing topics keep their partitions
    context = Context(book=runtime.codebook(settings), database=runtime.database(settings),
                      pseudonymizer=runtime.pseudonymizer(settings), publisher=Publisher(bootstrap),
                      bootstrap=bootstrap, engine_group=settings.engine_group)
    # log_config=None: uvicorn logs through the root handlers, where the patient-data guard sits.
    uvicorn.run(create_app(context), host=settings.http_host, port=settings.http_port, access_log=False,
                log_config=None)


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
