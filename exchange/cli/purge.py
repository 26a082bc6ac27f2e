"""``hrx purge``: apply the retention policies (HRX_RETAIN_*, exchange/purge.py); a dry run unless ``--apply``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine as Database

    from exchange.config import Settings


@click.command()
@click.option("--apply", "apply_", is_flag=True,
              help="remove what the policies allow (default: a dry run that only says what would go)")
@click.option("--spool", "spools", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="a DICOM spool directory besides those under HRX_VAR_DIR (dicom-spool*, dicom-pull-spool); "
                   "repeatable")
@click.option("--hl7-journal", type=click.Path(dir_okay=False, path_type=Path),
              help="the HL7 listener's ACK journal (default: $HRX_VAR_DIR/hl7-acks.db)")
@click.option("--no-store", is_flag=True, help="prune only the doors' files (spools, journal), not the store")
def purge(apply_: bool, spools: tuple[Path, ...], hl7_journal: Path | None, no_store: bool) -> None:
    """Apply the retention policies: DICOM spools, HL7 ACK journal, resolved dead letters, results past their
    horizon (default: kept). Audit records are never removed before 3 years. Safe while the exchange runs;
    running it again removes nothing more."""
    from exchange import purge as retention
    from exchange.progress import progress_bar
    from exchange.config import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # e.g. an audit retention below 3 years: refused before anything is touched
        click.echo(f"hrx purge: {exc}", err=True)
        sys.exit(2)
    database = None if no_store else _store(settings)
    dry_run = not apply_
    click.echo(f"hrx purge: {'dry run: nothing is removed (--apply removes)' if dry_run else 'removing'}", err=True)
    for step in retention.purge(database, settings.retention, var_dir=settings.var_dir, spools=spools,
                                hl7_journal=hl7_journal, dry_run=dry_run, progress=progress_bar):
        click.echo(step.line(dry_run))


def _store(settings: Settings) -> Database | None:
    """The store to prune, at the schema revision this code expects (else the process stops saying what to run:
    prune only what the code understands); None, said, when there is no store here."""
    from sqlalchemy.engine import make_url

    from exchange import runtime

    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        click.echo(f"store: none at {url.database} (HRX_DATABASE_URL, HRX_VAR_DIR): only the doors' files", err=True)
        return None
    return runtime.database(settings)
