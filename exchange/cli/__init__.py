"""The ``hrx`` command line.

Every subcommand lives in its own module and is imported only when it runs, so ``hrx --help`` and each
``--help`` answer without loading the adapters, the store or the event validators.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click


class LazyGroup(click.Group):
    """A click group whose subcommands are ``"module:attribute"`` strings, imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, str] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The one-line help of a lazy command would import it: list the names and the summaries kept here.
        rows = [(name, SUMMARIES.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


#: One-line summaries shown by ``--help`` without importing the commands.
SUMMARIES = {
    "up": "Start broker (embedded unless HRX_KAFKA_BOOTSTRAP), store, engine, API and listeners.",
    "engine": "Run one engine consumer (Kafka result topics → store).",
    "serve": "Run only the HTTP API against an existing broker and store.",
    "migrate": "Bring the store's schema to this version (once per deployment, before the others start).",
    "pseudonym": "Print the pseudonym of a resident ID under the configured key.",
    "keys": "The pseudonym key: create it once per exchange (keys init), show its id.",
    "adapter": "Hospital adapters: parse, map, pseudonymize, publish.",
    "users": "People's accounts: add, disable, reset-password, list.",
    "clients": "Hospital systems' client credentials: add, rotate, revoke, list.",
    "codes": "Stored results against the code book: unmapped codes, re-map.",
    "audit": "The audit trail: verify its hash chain, print its head digest.",
    "purge": "Apply the retention policies (HRX_RETAIN_*): a dry run unless --apply.",
    "catalogue": "Validate, diff, import and report coverage of catalogues.",
    "fhir": "Publish FHIR R4 Bundles from files.",
    "hl7": "HL7 v2 ORU^R01: MLLP listener or files.",
    "csv": "Publish a LIS CSV export under a column profile.",
    "dicom-scp": "DICOM C-STORE receiver (C-ECHO/C-STORE SCP).",
    "dicom-pull": "C-FIND + C-MOVE studies from a PACS.",
}


def _logging(verbose: bool) -> None:
    """Configure logging (the only place that does): stderr, as text or, with ``HRX_LOG_FORMAT=json``, one JSON
    object per line (adapters.log_format); the log guard on the root handlers either way."""
    import os

    from adapters.log_guard import install_log_guard

    style = os.environ.get("HRX_LOG_FORMAT", "text").strip().lower() or "text"
    if style not in ("text", "json"):
        raise click.UsageError(f"HRX_LOG_FORMAT must be text or json, not {style!r}")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    if style == "json":
        from adapters.log_format import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    install_log_guard()


@click.group(cls=LazyGroup, lazy={
    "up": "exchange.cli.stack:up",
    "engine": "exchange.cli.stack:engine",
    "serve": "exchange.cli.stack:serve",
    "migrate": "exchange.cli.migrate:migrate",
    "pseudonym": "exchange.cli.stack:pseudonym",
    "keys": "exchange.cli.keys:keys_group",
    "codes": "exchange.cli.codes:codes_group",
    "audit": "exchange.cli.audit:audit_group",
    "purge": "exchange.cli.purge:purge",
    "catalogue": "codes.cli:catalogue",
    "users": "exchange.cli.access:users_group",
    "clients": "exchange.cli.access:clients_group",
})
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """HR Exchange — 检查检验结果互认 (mutual recognition of lab and imaging results)."""
    _logging(verbose)


@main.group(cls=LazyGroup, lazy={
    "fhir": "exchange.cli.adapter_fhir:adapter_fhir",
    "hl7": "exchange.cli.adapter_hl7:hl7",
    "csv": "exchange.cli.adapter_csv:csv",
    "dicom-scp": "exchange.cli.adapter_dicom:dicom_scp",
    "dicom-pull": "exchange.cli.adapter_dicom:dicom_pull",
})
def adapter() -> None:
    """Hospital adapters: parse, map, pseudonymize, publish."""
