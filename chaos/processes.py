"""The exchange's processes as a fault scenario runs them: started as ``hrx up`` starts them, killed as a crash.

Every child is ``python -m exchange.cli …`` with the ``HRX_*`` environment of :func:`exchange_env`, its output
in a log file of the run's directory. :meth:`Child.kill9` is ``kill -9``; a child that exits without having
been killed or stopped counts as a crash.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer

from bench.data import PSEUDONYM_KEY
from exchange.broker import EmbeddedBroker, ensure_topics, free_port
from schemas.topics import DEFAULT_PARTITIONS

ROOT = Path(__file__).resolve().parent.parent
#: The suite's pseudonym key (synthetic patients only).
#: Set (``python -m chaos --keep``) to keep each run's directory: the processes' logs, the broker's, the store.
KEEP_ENV = "HRX_CHAOS_KEEP"


@contextmanager
def run_directory(scenario: str) -> Iterator[Path]:
    """A fresh directory for one run of ``scenario``; removed afterwards unless ``$HRX_CHAOS_KEEP`` is set."""
    path = Path(tempfile.mkdtemp(prefix=f"hrx-chaos-{scenario}-"))
    try:
        yield path
    finally:
        if os.environ.get(KEEP_ENV):
            print(f"{scenario}: logs kept in {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class Child:
    """One process of the exchange started by a scenario."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Set when the scenario killed or stopped it: an exit is then not a crash.
    ended_on_purpose: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def crashed(self) -> bool:
        return not self.ended_on_purpose and self.process.poll() is not None

    def kill9(self) -> None:
        """``kill -9``: no signal handler runs, nothing is flushed or committed."""
        self.ended_on_purpose = True
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status (None if it had to be killed)."""
        self.ended_on_purpose = True
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
                return None
        return self.process.returncode

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def exchange_env(*, bootstrap: str, var_dir: Path, database_url: str | None = None,
                 group: str = "chaos-engine", **extra: str) -> dict[str, str]:
    """The environment of an exchange process (see exchange/config.py) for this run."""
    env = {**os.environ, "HRX_KAFKA_BOOTSTRAP": bootstrap, "HRX_VAR_DIR": str(var_dir),
           "HRX_ENGINE_GROUP": group, "HRX_PSEUDONYM_KEY": PSEUDONYM_KEY, **extra}
    if database_url:
        env["HRX_DATABASE_URL"] = database_url
    return env


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    """``python -m exchange.cli ARGS`` with its output appended to ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "exchange.cli", *args], env=env, cwd=ROOT,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Child(name, process, log_path)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is truthy; False when ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_listening(child: Child, port: int, timeout: float = 60.0) -> None:
    """Wait until ``child`` accepts connections on ``port``; raise with its log's tail if it dies or never does."""
    if not wait_until(lambda: listening(port) or not child.alive(), timeout) or not child.alive():
        raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:.0f} s:\n{child.tail()}")


@dataclass
class RestartableBroker:
    """The embedded tansu broker (memory-only) on a fixed loopback port: killed with SIGKILL, started again
    on the same port with the exchange's topics, as an operator restarting ``hrx up``'s broker would."""

    log_path: Path
    port: int = field(default_factory=free_port)
    restarts: int = 0
    #: After each start, the topics found with fewer partitions than configured (``topic: found``): a client
    #: that asked for a topic before it was created again had the broker create it with its own default.
    short_topics: list[dict[str, int]] = field(default_factory=list)
    _broker: EmbeddedBroker | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RestartableBroker:
        self._broker = EmbeddedBroker(port=self.port, log_path=self.log_path).start()
        ensure_topics(self.bootstrap, DEFAULT_PARTITIONS)
        self.short_topics.append(_short_topics(self.bootstrap))
        return self

    def kill9(self) -> None:
        if self._broker is not None:
            self._broker.kill()
            self._broker = None

    def restart(self) -> None:
        self.kill9()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None

    def __enter__(self) -> RestartableBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _short_topics(bootstrap: str) -> dict[str, int]:
    probe = KafkaConsumer(bootstrap_servers=bootstrap, client_id="chaos-topics")
    try:
        found = {topic: len(probe.partitions_for_topic(topic) or ()) for topic in DEFAULT_PARTITIONS}
    finally:
        probe.close()
    return {topic: n for topic, n in found.items() if n < DEFAULT_PARTITIONS[topic]}
