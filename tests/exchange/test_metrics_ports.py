"""The engine and the HL7 listener as their own processes, each with its metrics port (``--metrics-port``) and
JSON logs (``HRX_LOG_FORMAT=json``): one HL7 message is counted by the listener (received, acknowledged, AA)
and by the engine (stored, lag back to 0), and both logs name its control id (MSH-10) — never the resident ID."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.hl7.mllp import MLLPClient
from exchange.broker import EmbeddedBroker, free_port
from exchange.store import connect, migrate
from tests.adapters.hl7.hl7data import CHAOYANG, CHAOYANG_ID, fields
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration


class Process:
    """An ``hrx`` child whose stderr is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "exchange.cli", *args], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_engine_and_listener_serve_metrics_and_log_json_with_the_control_id(broker: EmbeddedBroker,
                                                                            tmp_path: Path) -> None:
    env = {**os.environ, "HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_VAR_DIR": str(tmp_path / "var"),
           "HRX_DATABASE_URL": f"sqlite:///{tmp_path / 'hrx.db'}", "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_LOG_FORMAT": "json", "HRX_ENGINE_GROUP": "metrics-test", "PYTHONUNBUFFERED": "1"}
    store = connect(env["HRX_DATABASE_URL"])
    migrate(store)  # `hrx migrate`'s step: the engine refuses a store not at the current revision
    store.dispose()
    engine_port, listener_port, mllp_port = free_port(), free_port(), free_port()
    engine = Process(["-v", "engine", "--metrics-port", str(engine_port)], env)
    listener = Process(["adapter", "hl7", "--listen", f"127.0.0.1:{mllp_port}", "--institution", "bj-chaoyang-001"],
                       {**env, "HRX_METRICS_PORT": str(listener_port)})  # the environment setting, not the option
    try:
        wait_for(lambda: _scrape(engine_port) and _scrape(listener_port), timeout=60)
        wait_for(lambda: any("consuming" in line for line in engine.lines), timeout=60)
        with MLLPClient("127.0.0.1", wait_for(lambda: mllp_port if _accepting(mllp_port) else 0, timeout=60)) as c:
            ack = fields(c.send(CHAOYANG))
        assert ack["MSA-1"] == "AA"
        control_id = ack["MSA-2"]
        door = _scrape(listener_port)
        assert door[("hrx_door_answers_total", (("answer", "AA"), ("door", "hl7v2")))] == 1
        assert door[("hrx_door_results_received_total", (("door", "hl7v2"),))] == 1
        assert door[("hrx_door_results_acknowledged_total", (("door", "hl7v2"),))] == 1
        stored = wait_for(lambda: _scrape(engine_port).get(("hrx_engine_events_total", (("outcome", "stored"),))),
                          timeout=60)
        assert stored == 1

        def lag_drained() -> bool:
            lags = [v for (name, _), v in _scrape(engine_port).items() if name == "hrx_engine_consumer_lag"]
            return bool(lags) and not any(lags)

        wait_for(lag_drained, timeout=30)
        wait_for(lambda: any("engine: stored" in line for line in engine.lines), timeout=30)
    finally:
        engine.stop()
        listener.stop()
    logged = [json.loads(line) for line in engine.lines + listener.lines]  # every line is one JSON object
    assert CHAOYANG_ID not in "".join(engine.lines + listener.lines)
    at_door = [line for line in logged if line.get("door") == "hl7v2" and "control=" in line["message"]]
    at_store = [line for line in logged if line["message"].startswith("engine: stored")]
    assert [line["message_id"] for line in at_door] == [control_id]
    assert [line["message_id"] for line in at_store] == [control_id] and at_store[0]["event_id"]


def _accepting(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
