"""`hrx up --demo` as a user runs it: serving, demo results answerable by the printed curl, clean Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from exchange.broker import free_port


def _read_until_curl(process: subprocess.Popen[str], lines: list[str], done: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if "-d '" in line:
            done.set()
    done.set()


def test_up_demo_serves_and_stops_cleanly(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HRX_VAR_DIR": str(tmp_path / "var"), "HRX_DATABASE_URL": database_url,
           "PYTHONUNBUFFERED": "1"}
    env.pop("HRX_KAFKA_BOOTSTRAP", None)
    process = subprocess.Popen([sys.executable, "-m", "exchange.cli", "up", "--demo", "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    done = threading.Event()
    reader = threading.Thread(target=_read_until_curl, args=(process, lines, done), daemon=True)
    reader.start()
    try:
        if not done.wait(120) or process.poll() is not None:
            pytest.fail("hrx up --demo printed no curl:\n" + "".join(lines))
        curl = next(line for line in lines if "curl -s -X POST" in line)
        data_line = next(line for line in lines if "-d '" in line)
        url = re.search(r"(http://\S+/api/v1/recognition/check)", curl).group(1)  # type: ignore[union-attr]
        body = json.loads(shlex.split(data_line.strip())[1])
        answer = httpx.post(url, json=body, timeout=30).json()
        statuses = {e["recognition"]["status"] for e in answer["results"]}
        assert answer["complete"] and len({e["result"]["result_id"] for e in answer["results"]}) == 8
        assert {"recognizable", "expired", "qc_not_met", "not_in_catalogue"} <= statuses, statuses
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=30).status_code == 200
        log = "".join(lines)
        assert "memory-only" in log and "engine: 1 consumer process" in log
        assert body["patient"]["resident_id"] not in log.replace(data_line, "")  # only the curl shows it
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("hrx up did not stop within 30 s of Ctrl-C:\n" + "".join(lines))
    reader.join(5)
    assert code == 0, "".join(lines)
    assert "stopped" in "".join(lines)
