"""``hrx keys``: create the exchange's pseudonym key (once) and show its id.

A key is made only here or by the first ``hrx up`` with the embedded default: every other process refuses to
start without it, so that no process ever pseudonymizes under a key of its own (docs/rules.md, "Privacy").
"""
from __future__ import annotations

from pathlib import Path

import click

from exchange.config import Settings


@click.group("keys")
def keys_group() -> None:
    """The pseudonym key: create it once per exchange, show its id."""


@keys_group.command("init")
@click.option("--file", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              help="where to write the key (default: HRX_PSEUDONYM_KEY_FILE, else $HRX_VAR_DIR/pseudonym.key)")
def keys_init(key_file: Path | None) -> None:
    """Create a new random pseudonym key file (mode 0600) and print its key id; never replaces one.

    Every adapter, engine and API of one exchange, at every hospital, must then use this same file and the
    same algorithm (HRX_PSEUDONYM_ALGORITHM, default sm3): the key id printed here is what their events carry.
    """
    from adapters.pseudonymize import (
        AlgorithmUnavailable,
        Pseudonymizer,
        create_key_file,
        key_file_path,
        resolve_provider,
    )

    settings = Settings.from_env(stack=False)
    if settings.pseudonym_key and key_file is None:
        raise click.UsageError("HRX_PSEUDONYM_KEY gives the key inline: unset it, or name a file with --file")
    path = key_file or key_file_path(settings.pseudonym_key_file, settings.var_dir)
    algorithm = {"algorithm": settings.pseudonym_algorithm} if settings.pseudonym_algorithm else {}
    try:
        if settings.pseudonym_algorithm:
            resolve_provider(settings.pseudonym_algorithm)  # refused before any file is written
        key = create_key_file(path)
    except FileExistsError:
        existing = Pseudonymizer(path.read_text().strip().encode(), **algorithm)
        raise click.ClickException(f"{path} exists (key id {existing.key_id}); a new key would change every "
                                   "pseudonym, so it is never replaced") from None
    except AlgorithmUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    made = Pseudonymizer(key, **algorithm)
    click.echo(f"created {path} (mode 0600): keep it secret, back it up, give every process of this exchange "
               "the same file", err=True)
    click.echo(made.key_id)


@keys_group.command("id")
def keys_id() -> None:
    """Print the key id of the configured key (compare it across hosts: every process must show the same)."""
    from exchange import runtime

    click.echo(runtime.pseudonymizer(Settings.from_env()).key_id)
