"""``hrx up``: broker, store, engine consumers and the HTTP API on one machine, stopped cleanly by Ctrl-C."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import replace

import uvicorn

from exchange import runtime
from exchange.api import Context, create_app
from exchange.broker import EmbeddedBroker, ensure_topics
from exchange.config import Settings
from adapters.publish import Publisher
from exchange.remap import remap

log = logging.getLogger("hrx.up")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def spawn_engine(settings: Settings, bootstrap: str) -> subprocess.Popen[bytes]:
    """One engine consumer process in the shared consumer group (add more to scale out)."""
    env = {**os.environ, **settings.to_env(), "HRX_KAFKA_BOOTSTRAP": bootstrap, "HRX_PARENT_PID": str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "exchange.cli", "engine"], env=env)


def up(settings: Settings, demo: bool = False, engines: int = 1) -> int:
    if not _port_free(settings.http_host, settings.http_port):
        log.error("port %s:%d is in use: stop what listens there or set HRX_HTTP_PORT / --port",
                  settings.http_host, settings.http_port)
        return 2
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    book = runtime.codebook(settings)
    pseudonymizer = runtime.pseudonymizer(settings)
    broker: EmbeddedBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
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
        created = ensure_topics(bootstrap, settings.partitions)
        log.info("topics: %s (created now: %s)",
                 ", ".join(f"{t}×{n}" for t, n in settings.partitions.items()), ", ".join(created) or "none")
        database = runtime.database(settings)
        remapped = remap(database, book)  # mapping tables may have changed since the last start
        log.info("codes: %d stored result(s) re-evaluated against mapping tables, %d re-mapped",
                 remapped.examined, remapped.changed)
        children = [spawn_engine(settings, bootstrap) for _ in range(engines)]
        log.info("engine: %d consumer process(es) in group %s (pids %s)", engines, settings.engine_group,
                 ", ".join(str(c.pid) for c in children))
        publisher = Publisher(bootstrap)
        context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,
                          bootstrap=bootstrap, engine_group=settings.engine_group)
        server = uvicorn.Server(uvicorn.Config(create_app(context), host=settings.http_host,
                                               port=settings.http_port, log_level="info", access_log=False,
                                               log_config=None))  # through the guarded root handlers
        if demo:
            from exchange.demo import run_demo

            threading.Thread(target=run_demo, args=(server, settings, book), name="demo", daemon=True).start()
        log.info("api: http://%s:%d (OpenAPI at /docs) — Ctrl-C stops everything",
                 settings.http_host, settings.http_port)
        server.run()
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if publisher is not None:
            publisher.close()
        if broker is not None:
            broker.stop()
        log.info("stopped")


def settings_with(settings: Settings, **changes: object) -> Settings:
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
