"""``hrx adapter fhir``: publish FHIR R4 Bundles from files, with the rules of ``POST /fhir``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from exchange.config import Settings


@click.command("fhir")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def adapter_fhir(files: tuple[Path, ...]) -> None:
    """Publish FHIR R4 Bundles from FILES; each file is all-or-nothing. Exit 1 if any file was refused.

    As at POST /fhir: files larger than HRX_FHIR_MAX_BYTES are refused unread, and reports that contradict
    the store (same identifier and version with other content, or a status-rank version under a higher
    stored one) are refused before anything is published.
    """
    import orjson

    from adapters.fhir import build_events, shorten
    from adapters.report import AdapterError
    from adapters.pipeline import ResultPipeline
    from adapters.publish import BrokerUnavailable, Publisher
    from exchange import runtime
    from exchange.conflicts import check_against_store

    settings = Settings.from_env()
    pseudonymizer = runtime.pseudonymizer(settings)  # refuses to start without the exchange's key
    publisher = Publisher(runtime.require_bootstrap(settings))
    pipeline = ResultPipeline(runtime.codebook(settings), pseudonymizer, publisher)
    database = runtime.database(settings)
    failed = 0
    try:
        for path in files:
            try:
                size = path.stat().st_size
                if size > settings.fhir_max_bytes:
                    raise AdapterError(f"{size} bytes, larger than {settings.fhir_max_bytes} (HRX_FHIR_MAX_BYTES)")
                built = build_events(pipeline, orjson.loads(path.read_bytes()))
                with database.connect() as conn:
                    checked = check_against_store(conn, built)
                if checked.conflicts:
                    raise AdapterError("; ".join(f"{c.location}: {c.message}" for c in checked.conflicts[:10])
                                       + (f" (and {len(checked.conflicts) - 10} more)"
                                          if len(checked.conflicts) > 10 else ""), code="conflict")
                pipeline.publish([b.event for b in built])
                resent = len(checked.resent)
                click.echo(f"{path}: published {len(built)} result(s)"
                           + (f", {resent} of them already stored" if resent else ""))
            except orjson.JSONDecodeError as exc:
                failed += 1
                click.echo(f"{path}: refused: not JSON: {exc}", err=True)
            except (AdapterError, BrokerUnavailable) as exc:
                failed += 1
                click.echo(f"{path}: refused: {shorten(str(exc))}", err=True)
    finally:
        publisher.close()
        database.dispose()
    click.echo(f"{len(files) - failed} file(s) published, {failed} refused")
    sys.exit(1 if failed else 0)
