"""`hrx up --demo` as a user runs it: serving, demo results answerable by the printed curl, clean Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from exchange.broker import free_port
from tests.fixtures.tls import TlsPair
from tests.fixtures.waiting import wait_for

# Every test here runs hrx up in a fresh process.
pytestmark = pytest.mark.integration


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
        # What the demo prints, as a user pastes it: a client-credentials token, then the check as that HIS.
        token_line = next(line for line in lines if "TOKEN=$(curl" in line)
        client_id = re.search(r"client_id=(\S+)", token_line).group(1)  # type: ignore[union-attr]
        secret = re.search(r"client_secret='([^']+)'", token_line).group(1)  # type: ignore[union-attr]
        curl = next(line for line in lines if "curl -s -X POST" in line)
        on_behalf = next(line for line in lines if "X-HRX-On-Behalf-Of:" in line)
        clinician = re.search(r"X-HRX-On-Behalf-Of: ([^']+)'", on_behalf).group(1)  # type: ignore[union-attr]
        data_line = next(line for line in lines if "-d '" in line)
        url = re.search(r"(http://\S+/api/v1/recognition/check)", curl).group(1)  # type: ignore[union-attr]
        token = httpx.post(url.replace("/recognition/check", "/auth/token"), timeout=30, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json()
        body = json.loads(shlex.split(data_line.strip())[1])
        headers = {"Authorization": f"Bearer {token['access_token']}", "X-HRX-On-Behalf-Of": clinician}
        assert httpx.post(url, json=body, timeout=30).status_code == 401  # nobody reads without a token
        answer = httpx.post(url, json=body, headers=headers, timeout=30).json()
        statuses = {e["recognition"]["status"] for e in answer["results"]}
        assert answer["complete"] and len({e["result"]["result_id"] for e in answer["results"]}) == 8
        assert {"recognizable", "expired", "qc_not_met", "not_in_catalogue"} <= statuses, statuses
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).json()["status"] == "ok"
        # the demo runs on its own copy of the shipped codes, which an operator may add mappings to
        stack_file = json.loads((tmp_path / "var" / "stack.json").read_text())
        assert Path(stack_file["codes_dir"]) == (tmp_path / "var" / "codes").resolve()
        assert (tmp_path / "var" / "codes" / "institutions.yaml").is_file()
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=30).status_code == 200
        docs = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=30)  # Swagger UI from the package, no CDN
        assert docs.status_code == 200 and "/ui/assets/vendor/swagger-ui/" in docs.text and "//" not in docs.text
        log = "".join(lines)
        assert "memory-only" in log and "engine: 1 consumer process" in log
        assert "demo: the check answers 8 of the demo patient's 8 demo reports" in log
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text  # the demo went through POST /fhir
        bundles = int(re.search(r"demo: (\d+) of \1 Bundle\(s\) accepted", log).group(1))  # type: ignore[union-attr]
        assert f'hrx_door_answers_total{{answer="200",door="fhir"}} {float(bundles)}' in scraped
        patient_line = next(line for line in lines if "the demo patient: resident ID" in line)
        # only the curl and the demo patient's login show the (synthetic) resident ID
        assert body["patient"]["resident_id"] not in log.replace(data_line, "").replace(patient_line, "")
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
    assert not (tmp_path / "var" / "stack.json").exists()  # removed on a clean stop


class Stack:
    """An ``hrx up`` child process whose output is collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "exchange.cli", "up", *args], cwd=cwd, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"hrx up never logged {text!r}:\n{self.log}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail("hrx up did not stop within 40 s of Ctrl-C:\n" + self.log)
        self.reader.join(5)
        return code


def _bare_env(**extra: str) -> dict[str, str]:
    """The environment without any HRX_ setting, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("HRX_")}, "PYTHONUNBUFFERED": "1", **extra}


def _his_client(api_port: int, var: Path, institution: str) -> dict[str, str]:
    """As an operator registers a HIS beside a running stack (``hrx clients add`` with its var directory): the
    headers of that HIS acting for dr-test."""
    added = subprocess.run([sys.executable, "-m", "exchange.cli", "clients", "add", f"his-{institution}", "--role",
                            "his", "--institution", institution], env=_bare_env(HRX_VAR_DIR=str(var)),
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    secret = re.search(r"secret \(shown once\): (\S+)", added.stdout).group(1)  # type: ignore[union-attr]
    token = httpx.post(f"http://127.0.0.1:{api_port}/api/v1/auth/token", timeout=30, data={
        "grant_type": "client_credentials", "client_id": f"his-{institution}", "client_secret": secret}).json()
    return {"Authorization": f"Bearer {token['access_token']}", "X-HRX-On-Behalf-Of": "dr-test"}


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_up_runs_listeners_and_adapters_started_beside_it_find_broker_and_key(tmp_path: Path) -> None:
    """`hrx up --hl7/--dicom` starts the doors as its children; what the HL7 listener acknowledged is answered by
    the check; an adapter started with only the same HRX_VAR_DIR publishes under the same key."""
    from adapters.hl7.mllp import MLLPClient
    from tests.adapters.hl7.hl7data import CHAOYANG, CHAOYANG_ID, fields, renumber

    var = tmp_path / "var"
    api, hl7_port, dicom_port = free_port(), free_port(), free_port()
    stack = Stack(["--port", str(api), "--hl7", f"127.0.0.1:{hl7_port}:bj-chaoyang-001",
                   "--dicom", f"127.0.0.1:{dicom_port}:bj-chaoyang-001"], tmp_path, _bare_env(HRX_VAR_DIR=str(var)))
    try:
        stack.wait_for_line("api: http")
        wait_for(lambda: _accepting(api), timeout=60)
        created = re.search(r"pseudonym key: created (\S+) \(key id (sm3-[0-9a-f]{16})", stack.log)
        assert created, stack.log
        assert Path(created.group(1)) == (var / "pseudonym.key").resolve()
        key_id = created.group(2)
        written = json.loads((var / "stack.json").read_text())
        assert written["key_id"] == key_id and written["pseudonym_key_file"] == created.group(1)
        assert httpx.get(f"http://127.0.0.1:{api}/api/v1/health", timeout=30).json()["pseudonym"]["key_id"] == key_id

        stack.wait_for_line("hl7: MLLP listener for bj-chaoyang-001")
        with MLLPClient("127.0.0.1", hl7_port) as client:
            assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"

        his = _his_client(api, var, "bj-chaoyang-002")

        def answered() -> dict | None:  # type: ignore[type-arg]
            answer = httpx.post(f"http://127.0.0.1:{api}/api/v1/recognition/check", timeout=30, headers=his, json={
                "patient": {"resident_id": CHAOYANG_ID}, "requesting_institution": "bj-chaoyang-002",
                "encounter_id": "V-1"}).json()
            return answer if answer["results"] else None

        answer = wait_for(answered, timeout=60)
        assert {e["result"]["result_id"] for e in answer["results"]} == {"CY2403150088"}

        # Beside the stack, with nothing but its var directory: broker, codes and key come from var/stack.json.
        beside = tmp_path / "elsewhere"
        beside.mkdir()
        (beside / "second.hl7").write_bytes(renumber(CHAOYANG, 1))
        env = _bare_env(HRX_VAR_DIR=str(var))
        sent = subprocess.run([sys.executable, "-m", "exchange.cli", "adapter", "hl7", "--institution",
                               "bj-chaoyang-001", "second.hl7"], cwd=beside, env=env, capture_output=True,
                              text=True, timeout=120)
        assert sent.returncode == 0 and "1 message(s) accepted" in sent.stdout, sent.stdout + sent.stderr
        assert f"pseudonym key: {key_id}" in sent.stderr
        wait_for(lambda: {e["result"]["result_id"] for e in (answered() or {"results": []})["results"]}
                 == {"CY2403150088", "CY-R-000001"}, timeout=60)
        shown = subprocess.run([sys.executable, "-m", "exchange.cli", "pseudonym", CHAOYANG_ID], cwd=beside, env=env,
                               capture_output=True, text=True, timeout=60)
        assert shown.stdout.strip() == answer["patient"]["pseudonym"], shown.stderr

        # The DICOM door answers C-ECHO with the AE title HRX.
        wait_for(lambda: _accepting(dicom_port), timeout=60)
        echo = subprocess.run(["echoscu", "-aet", "ECHOSCU", "-aec", "HRX", "127.0.0.1", str(dicom_port)],
                              capture_output=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
    finally:
        code = stack.stop()
    assert code == 0, stack.log
    assert "exited with code" not in stack.log  # no child died while the stack ran
    assert not (var / "stack.json").exists()
    assert not _accepting(hl7_port) and not _accepting(dicom_port)  # the listeners stopped with the stack


def test_up_makes_no_new_key_beside_a_store_whose_key_is_missing(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "hrx.db").write_bytes(b"")  # results made under a key that has since been lost
    run = subprocess.run([sys.executable, "-m", "exchange.cli", "up", "--port", str(free_port())], cwd=tmp_path,
                         env=_bare_env(HRX_VAR_DIR=str(var)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "restore the key file" in run.stderr, run.stderr
    assert not (var / "pseudonym.key").exists()


def test_up_refuses_a_var_directory_another_up_is_using(tmp_path: Path) -> None:
    from exchange.stack_file import StackFile, write_stack_file

    var = tmp_path / "var"
    var.mkdir()
    write_stack_file(var, StackFile(pid=os.getpid(), kafka_bootstrap="127.0.0.1:9", database_url="sqlite://",
                                    codes_dir=None, pseudonym_key_file=None, pseudonym_algorithm="sm3",
                                    key_id="sm3-0123456789abcdef", api="http://127.0.0.1:1"))
    run = subprocess.run([sys.executable, "-m", "exchange.cli", "up", "--port", str(free_port())], cwd=tmp_path,
                         env=_bare_env(HRX_VAR_DIR=str(var)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and f"hrx up (pid {os.getpid()}) already runs" in run.stderr, run.stderr
    assert not (var / "pseudonym.key").exists()


def test_up_serves_https_and_keeps_its_var_directory_private(tls_pair: TlsPair, tmp_path: Path) -> None:
    var = tmp_path / "var"
    api = free_port()
    stack = Stack(["--port", str(api), "--tls-cert", str(tls_pair.cert), "--tls-key", str(tls_pair.key)], tmp_path,
                  _bare_env(HRX_VAR_DIR=str(var)))
    try:
        stack.wait_for_line(f"api: https://127.0.0.1:{api}")
        trusted = ssl.create_default_context(cafile=str(tls_pair.cert))

        def healthy() -> bool:
            try:
                return httpx.get(f"https://127.0.0.1:{api}/api/v1/health", verify=trusted, timeout=10).is_success
            except httpx.ConnectError:  # not listening yet
                return False

        wait_for(healthy, timeout=60)
        assert json.loads((var / "stack.json").read_text())["api"] == f"https://127.0.0.1:{api}"
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        assert stat.S_IMODE((var / "pseudonym.key").stat().st_mode) == 0o600
    finally:
        code = stack.stop()
    assert code == 0, stack.log


def test_sigterm_stops_the_whole_stack_as_ctrl_c_does(tmp_path: Path) -> None:
    """systemd and ``docker stop`` send SIGTERM: the engines and the embedded broker stop with the stack."""
    port = free_port()
    stack = Stack(["--port", str(port)], tmp_path, _bare_env(HRX_VAR_DIR=str(tmp_path / "var")))
    broker = stack.wait_for_line("broker: embedded tansu at").split(" at ")[1].split()[0]
    stack.wait_for_line("api: ")
    wait_for(lambda: _accepting(port), timeout=60)
    stack.process.send_signal(signal.SIGTERM)
    try:
        code = stack.process.wait(40)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        pytest.fail("hrx up did not stop within 40 s of SIGTERM:\n" + stack.log)
    stack.reader.join(5)
    assert code == 0 and "stopped" in stack.log, stack.log
    assert not (tmp_path / "var" / "stack.json").exists()
    assert not _accepting(int(broker.rsplit(":", 1)[1]))  # the broker went with it
