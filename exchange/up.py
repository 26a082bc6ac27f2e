"""``hrx up``: broker, store, engine consumers, the HTTP API and optional HL7/DICOM listeners on one machine,
stopped cleanly by Ctrl-C.

Its first run creates the embedded default pseudonym key; it writes ``var/stack.json`` (exchange.stack_file) so
that processes started beside it find its broker, store, codes and key.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn

from codes import default_codes_dir
from codes.loader import SHIPPED_DIR
from exchange import runtime
from exchange.auth.patient_codes import FileSender
from exchange.api import Context, create_app
from exchange.broker import EmbeddedBroker, ensure_topics
from exchange.config import Settings
from exchange.stack_file import StackFile, read_stack_file, remove_stack_file, write_stack_file
from adapters.private_files import make_private_dir
from adapters.pseudonymize import key_file_path
from adapters.publish import Publisher
from exchange.remap import remap
from exchange.tls import uvicorn_tls

log = logging.getLogger("hrx.up")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _child_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), "HRX_KAFKA_BOOTSTRAP": bootstrap, "HRX_PARENT_PID": str(os.getpid())}


def spawn_engine(settings: Settings, bootstrap: str) -> subprocess.Popen[bytes]:
    """One engine consumer process in the shared consumer group (add more to scale out)."""
    return subprocess.Popen([sys.executable, "-m", "exchange.cli", "engine"], env=_child_env(settings, bootstrap))


@dataclass(frozen=True)
class Listener:
    """A hospital-facing listener ``hrx up`` runs as a child: ``hl7`` (MLLP) or ``dicom`` (C-STORE SCP)."""

    kind: str
    host: str
    port: int
    institution: str

    def command(self, settings: Settings) -> list[str]:
        """The ``hrx adapter …`` command line of this listener."""
        address = f"[{self.host}]" if ":" in self.host else self.host
        if self.kind == "hl7":
            return ["adapter", "hl7", "--listen", f"{address}:{self.port}", "--institution", self.institution]
        # One spool per listener: two SCPs must not share one.
        spool = settings.var_dir / f"dicom-spool-{self.institution}-{self.port}"
        return ["adapter", "dicom-scp", "--host", self.host, "--port", str(self.port), "--institution",
                self.institution, "--spool", str(spool)]

    def __str__(self) -> str:
        return f"{self.kind} listener for {self.institution} on {self.host}:{self.port}"


def spawn_listener(listener: Listener, settings: Settings, bootstrap: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "exchange.cli", *listener.command(settings)],
                            env=_child_env(settings, bootstrap))


def _watch_children(children: dict[subprocess.Popen[bytes], str], stopping: threading.Event) -> None:
    """Log, once, each child that exits while the stack runs (a listener that could not bind its port)."""
    reported: set[int] = set()
    while not stopping.wait(1.0):
        for child, what in children.items():
            if child.pid not in reported and child.poll() is not None:
                reported.add(child.pid)
                log.error("%s (pid %d) exited with code %s; the rest of the stack keeps running", what, child.pid,
                          child.returncode)


def stop_on_sigterm() -> None:
    """SIGTERM (systemd, ``docker stop``) stops the stack as Ctrl-C does. uvicorn shuts down on it and then raises
    the signal again under the handler it found: Python's default one would end the process at once, before the
    ``finally`` that stops the engines, the listeners and the embedded broker (which would be left running)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


def up(settings: Settings, demo: bool = False, engines: int = 1, listeners: Sequence[Listener] = ()) -> int:
    tls = uvicorn_tls(settings)  # refused before anything starts
    if not _port_free(settings.http_host, settings.http_port):
        log.error("port %s:%d is in use: stop what listens there or set HRX_HTTP_PORT / --port",
                  settings.http_host, settings.http_port)
        return 2
    running = read_stack_file(settings.var_dir)
    if running is not None:
        log.error("hrx up (pid %d) already runs with the var directory %s: stop it, or use another HRX_VAR_DIR",
                  running.pid, settings.var_dir)
        return 2
    make_private_dir(settings.var_dir)  # the store, the key and the stack file: the service user's only
    if demo and settings.codes_dir is None:  # an explicit HRX_CODES_DIR / --codes wins
        settings = replace(settings, codes_dir=demo_codes_dir(settings.var_dir))
        log.info("codes: the demo runs on its own copy of the shipped code data, %s (operators' mappings and "
                 "catalogue imports go there)", settings.codes_dir)
    book = runtime.codebook(settings)
    for listener in listeners:
        if listener.institution not in book.institutions:
            log.error("%s: unknown institution (not in the code book's institutions)", listener)
            return 2
    pseudonymizer = runtime.pseudonymizer_creating_default(settings)
    broker: EmbeddedBroker | None = None
    engine_children: list[subprocess.Popen[bytes]] = []
    listener_children: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()
    publisher: Publisher | None = None
    try:
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
            log.info("broker: using Kafka at %s (HRX_KAFKA_BOOTSTRAP)", bootstrap)
        else:
            broker = EmbeddedBroker(log_path=settings.var_dir / "tansu.log").start()
            bootstrap = broker.bootstrap
            log.info("broker: embedded tansu at %s — memory-only storage: events not yet stored are lost if "
                     "this process stops; use Apache Kafka (docker/) for durability", bootstrap)
        replication = settings.topic_replication
        if broker is not None and replication != 1:
            log.warning("topics: HRX_TOPIC_REPLICATION_FACTOR=%d ignored: the embedded broker is a single node, "
                        "its topics have 1 copy", replication)
            replication = 1
        created = ensure_topics(bootstrap, settings.partitions, replication)
        log.info("topics: %s (created now: %s)",
                 ", ".join(f"{t}×{n}" for t, n in settings.partitions.items()), ", ".join(created) or "none")
        database = runtime.migrated_database(settings)  # once, before the engines and listeners start
        remapped = remap(database, book)  # mapping tables may have changed since the last start
        log.info("codes: %d stored result(s) re-evaluated against mapping tables, %d re-mapped",
                 remapped.examined, remapped.changed)
        stack = write_stack_file(settings.var_dir, StackFile(
            pid=os.getpid(), kafka_bootstrap=bootstrap, database_url=settings.effective_database_url,
            codes_dir=str((settings.codes_dir or default_codes_dir()).resolve()),
            pseudonym_key_file=(None if settings.pseudonym_key else
                                str(key_file_path(settings.pseudonym_key_file, settings.var_dir).resolve())),
            pseudonym_algorithm=pseudonymizer.algorithm, key_id=pseudonymizer.key_id,
            api=settings.api_url))
        log.info("stack: %s tells adapters, engines and `hrx serve` started with HRX_VAR_DIR=%s where the "
                 "broker, store, codes and key are", stack, settings.var_dir)
        engine_children = [spawn_engine(settings, bootstrap) for _ in range(engines)]
        log.info("engine: %d consumer process(es) in group %s (pids %s)", engines, settings.engine_group,
                 ", ".join(str(c.pid) for c in engine_children))
        for listener in listeners:
            listener_children.append(spawn_listener(listener, settings, bootstrap))
            log.info("%s (pid %d)", listener, listener_children[-1].pid)
        watched = {c: "engine" for c in engine_children} | dict(zip(listener_children, map(str, listeners)))
        threading.Thread(target=_watch_children, args=(watched, stopping), name="children", daemon=True).start()
        publisher = Publisher(bootstrap)
        context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,
                          bootstrap=bootstrap, engine_group=settings.engine_group,
                          fhir_max_bytes=settings.fhir_max_bytes, cors_origins=settings.cors_origins,
                          ui_base_url=settings.ui_base_url, ui_frame_ancestors=settings.ui_frame_ancestors,
                          cds_language=settings.cds_language,
                          fhir_validate=settings.fhir_validate,
                          # the demo's patients get their one-time codes in a file; a deployment plugs in its
                          # SMS gateway (exchange.auth.patient_codes.CodeSender)
                          code_sender=FileSender(settings.var_dir / "patient-codes.jsonl") if demo else None)
        server = uvicorn.Server(uvicorn.Config(create_app(context), host=settings.http_host,
                                               port=settings.http_port, log_level="info", access_log=False,
                                               log_config=None, **tls))  # through the guarded root handlers
        if demo:
            from exchange.demo import run_demo

            threading.Thread(target=run_demo, args=(server, settings, book, database), name="demo", daemon=True).start()
        log.info("api: %s (OpenAPI at /openapi.json, web pages at /ui/) — Ctrl-C stops everything", settings.api_url)
        stop_on_sigterm()
        server.run()
        return 0
    finally:
        stopping.set()
        _stop(listener_children)  # first the doors, so that nothing new arrives while the engines finish
        _stop(engine_children)
        remove_stack_file(settings.var_dir, os.getpid())
        if publisher is not None:
            publisher.close()
        if broker is not None:
            broker.stop()
        log.info("stopped")


#: Where ``hrx up --demo`` keeps its copy of the shipped code data, under the var directory.
DEMO_CODES = "codes"


def demo_codes_dir(var_dir: Path) -> Path:
    """The demo's own code directory: the shipped code data copied once under ``var_dir``, then kept.

    The shipped data is never edited (``codes.book.is_shipped``), so the demo runs on a copy an operator may add
    mappings and catalogue versions to; a later start keeps what they added. The copy is made beside and renamed
    into place, so an interrupted copy is never taken for a complete one."""
    target = var_dir / DEMO_CODES
    if not target.exists():
        partial = var_dir / f".{DEMO_CODES}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(SHIPPED_DIR, partial, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        partial.rename(target)
    return target


def settings_with(settings: Settings, **changes: object) -> Settings:
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
