"""``hrx adapter fhir``: publish FHIR R4 Bundles from files."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from exchange.config import Settings


@click.command("fhir")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def adapter_fhir(files: tuple[Path, ...]) -> None:
    """Publish FHIR R4 Bundles from FILES; each file is all-or-nothing. Exit 1 if any file was refused."""
    from adapters.fhir import bundle_events
    from adapters.pipeline import AdapterError, ResultPipeline
    from exchange import runtime
    from adapters.publish import BrokerUnavailable
    from adapters.publish import Publisher

    settings = Settings.from_env()
    pseudonymizer = runtime.pseudonymizer(settings)  # refuses to start without the exchange's key
    publisher = Publisher(runtime.require_bootstrap(settings))
    pipeline = ResultPipeline(runtime.codebook(settings), pseudonymizer, publisher)
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
