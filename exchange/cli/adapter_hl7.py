"""``hrx adapter hl7``: the HL7 v2 MLLP listener, or HL7 v2 files (batches).

The adapter (:mod:`adapters.hl7`) is imported inside the command, so ``--help`` answers without it.
"""
from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from exchange.cli.doors import (allow_list, door_options, metrics_port_option, start_metrics,
                                 tls_context)

if TYPE_CHECKING:
    from adapters.hl7 import Hl7Receiver
    from adapters.tls import ServerContext

log = logging.getLogger(__name__)


def _address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    return host.strip("[]") or "0.0.0.0", int(port)


def _default_max_bytes() -> int:
    from adapters.hl7 import DEFAULT_MAX_BYTES

    return DEFAULT_MAX_BYTES


@click.command("hl7")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--listen", metavar="HOST:PORT", help="run the MLLP listener on this address")
@click.option("--institution", required=True, help="institution ID of the hospital this adapter serves (issuer)")
@click.option("--max-bytes", type=click.IntRange(1024), default=_default_max_bytes, show_default="1 MiB",
              help="largest message accepted")
@click.option("--max-connections", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--publish-timeout", type=click.FloatRange(0.5, 60), default=4.0, show_default=True,
              help="seconds to wait for Kafka before refusing (keep it well below the sender's ACK timeout)")
@click.option("--facility", "facilities", multiple=True, help="accept only these MSH-4 values (repeatable)")
@click.option("--processing-id", "processing_ids", multiple=True, default=("P",), show_default=True,
              help="accepted MSH-11 processing IDs (repeatable)")
@click.option("--handshake-timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="with --tls-cert: seconds a TLS handshake may take")
@door_options
@metrics_port_option
def hl7(files: tuple[Path, ...], listen: str | None, institution: str, max_bytes: int, max_connections: int,
        publish_timeout: float, facilities: tuple[str, ...], processing_ids: tuple[str, ...], handshake_timeout: float,
        allow_file: Path | None, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None,
        metrics_port: int | None) -> None:
    """HL7 v2 ORU^R01: an MLLP listener (--listen HOST:PORT) or FILES (batches). Exit 1 if any message was refused.

    The listener's door (--allow, --tls-*) applies to --listen only: files are not checked against it.
    """
    if bool(listen) == bool(files):
        raise click.UsageError("give either --listen HOST:PORT or FILE arguments")
    from adapters.hl7 import AckJournal, Hl7Door, Hl7Receiver, split_batch
    from adapters.report import AdapterError
    from adapters.publish import Publisher
    from exchange import runtime
    from exchange.config import Settings

    settings = Settings.from_env()
    book = runtime.codebook(settings)
    door = Hl7Door(institution, allow_list(allow_file, book) if listen else None)
    tls = tls_context(tls_cert, tls_key, tls_ca, handshake_timeout) if listen else None
    pseudonymizer = runtime.pseudonymizer(settings)  # refuses to start (and creates nothing) without the key
    publisher = Publisher(runtime.require_bootstrap(settings), timeout_s=publish_timeout, client_id="hrx-hl7")
    # The ACKs past the resend horizon are pruned when the journal opens, as `hrx purge` does (HRX_RETAIN_HL7_ACK_DAYS).
    horizon = settings.retention.hl7_ack_days
    journal = AckJournal(settings.var_dir / "hl7-acks.db", retention_days=36500 if horizon is None else horizon)
    if listen:
        start_metrics(metrics_port)
    try:
        receiver = Hl7Receiver(institution, book, pseudonymizer, publisher, journal, processing_ids=processing_ids,
                               facilities=facilities, max_bytes=max_bytes, door=door)
    except AdapterError as exc:
        raise click.BadParameter(str(exc), param_hint="--institution") from None
    try:
        if listen:
            _serve(receiver, _address(listen), max_bytes, max_connections, tls, handshake_timeout)
            return
        refused = total = 0
        for path in files:
            for i, raw in enumerate(split_batch(path.read_bytes()), start=1):
                total += 1
                outcome = receiver.handle(raw)
                if not outcome.accepted:
                    refused += 1
                where = f" at {outcome.error.location}" if outcome.error and outcome.error.location else ""
                click.echo(f"{path}#{i} control={outcome.control_id or '-'}: {outcome.code or '-'}"
                           f"{' (duplicate)' if outcome.duplicate else ''}{where}: {outcome.text}",
                           err=not outcome.accepted)
        click.echo(f"{total - refused} message(s) accepted, {refused} refused")
        sys.exit(1 if refused else 0)
    finally:
        publisher.close()
        journal.close()


def _serve(receiver: Hl7Receiver, address: tuple[str, int], max_bytes: int, max_connections: int,
           tls: ServerContext | None, handshake_timeout: float) -> None:
    """Run the MLLP listener until SIGTERM or SIGINT (or until the `hrx up` that started it is gone)."""
    from adapters.doors import announce
    from adapters.hl7 import MLLPServer
    from exchange import runtime

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.stop_with_parent(stop)
    door = receiver.door
    server = MLLPServer(address, receiver, max_bytes=max_bytes, max_connections=max_connections,
                        admit=door.admits, ssl_context=tls,
                        handshake_timeout=handshake_timeout).start()
    announce("hl7", receiver.institution, None if door.allow is None else f"allow-list {door.allow.path}",
             len(door.senders or ()))
    log.info("hl7: MLLP listener for %s on %s:%d (max %d bytes, %d connections, %s)", receiver.institution,
             *server.address, max_bytes, max_connections,
             "plain TCP" if tls is None else "TLS" + (", client certificates required"
                                                      if tls.verify_mode == ssl.CERT_REQUIRED else ""))
    stop.wait()
    log.info("hl7: stopping")
    server.stop()
