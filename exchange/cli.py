"""The ``hrx`` command line."""
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


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """HR Exchange — 检查检验结果互认 (mutual recognition of lab and imaging results)."""
    _logging(verbose)


@main.command()
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


@main.command()
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


@main.command()
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
    uvicorn.run(create_app(context), host=settings.http_host, port=settings.http_port, access_log=False)


@main.group()
def adapter() -> None:
    """Hospital adapters: parse, map, pseudonymize, publish."""


@adapter.command("fhir")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def adapter_fhir(files: tuple[Path, ...]) -> None:
    """Publish FHIR R4 Bundles from FILES; each file is all-or-nothing. Exit 1 if any file was refused."""
    from adapters.fhir import bundle_events
    from adapters.pipeline import AdapterError, ResultPipeline
    from exchange import runtime
    from adapters.publish import BrokerUnavailable
    from adapters.publish import Publisher

    settings = Settings.from_env()
    publisher = Publisher(runtime.require_bootstrap(settings))
    pipeline = ResultPipeline(runtime.codebook(settings), runtime.pseudonymizer(settings), publisher)
    failed = 0
    try:
        for path in files:
            try:
                built = bundle_events(pipeline, orjson.loads(path.read_bytes()))
                pipeline.publish(built)
                click.echo(f"{path}: published {len(built)} result(s)")
            except orjson.JSONDecodeError as exc:
                failed += 1
                click.echo(f"{path}: refused: not JSON: {exc}", err=True)
            except (AdapterError, BrokerUnavailable) as exc:
                failed += 1
                click.echo(f"{path}: refused: {exc}", err=True)
    finally:
        publisher.close()
    click.echo(f"{len(files) - failed} file(s) published, {failed} refused")
    sys.exit(1 if failed else 0)


@main.group("codes")
def codes_group() -> None:
    """Stored results against the code book: unmapped local codes, re-evaluation after mapping changes."""


@codes_group.command("unmapped")
@click.option("--institution", help="only this issuer")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def codes_unmapped(institution: str | None, as_json: bool) -> None:
    """List local codes that reached the store without a unified code, with how many results carry them."""
    from exchange import runtime
    from exchange.store import unmapped_codes

    database = runtime.database(Settings.from_env())
    with database.connect() as conn:
        rows = unmapped_codes(conn, institution)
    if as_json:
        click.echo(orjson.dumps([r.__dict__ for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("没有未映射的本地编码 / no unmapped local codes")
        return
    click.echo(f"{'机构 institution':<24} {'本地编码 local code':<24} {'结果数 results':>14}  system")
    for r in rows:
        click.echo(f"{r.issuer:<24} {r.local_code:<24} {r.results:>14}  {r.local_system or '-'}")


@codes_group.command("remap")
@click.option("--all", "everything", is_flag=True, help="re-evaluate every stored result, not only stale ones")
def codes_remap(everything: bool) -> None:
    """Re-map stored results whose issuer's mapping table changed (also done by `hrx up` at start)."""
    from exchange import runtime
    from exchange.remap import remap

    settings = Settings.from_env()
    report = remap(runtime.database(settings), runtime.codebook(settings), everything=everything)
    click.echo(f"examined {report.examined}, re-mapped {report.changed}, newly mapped codes {report.newly_mapped}")


@main.command()
@click.argument("resident_id")
def pseudonym(resident_id: str) -> None:
    """Print the pseudonym of RESIDENT_ID under the configured key (nothing is stored or logged)."""
    from exchange import runtime
    from schemas.resident_id import InvalidResidentId

    try:
        click.echo(runtime.pseudonymizer(Settings.from_env()).pseudonym(resident_id))
    except InvalidResidentId as exc:
        raise click.BadParameter(str(exc), param_hint="RESIDENT_ID") from None


def _register_commands() -> None:
    """Commands that live beside what they operate on: the adapters and the code book."""
    from adapters.csv_export import csv
    from adapters.dicom.cli import dicom_pull, dicom_scp
    from adapters.hl7v2 import hl7
    from codes.cli import catalogue

    for command in (csv, hl7, dicom_scp, dicom_pull):
        adapter.add_command(command)
    main.add_command(catalogue)


_register_commands()

if __name__ == "__main__":
    main()

