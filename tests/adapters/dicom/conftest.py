"""DICOM peers for the adapter tests: dcmtk's storescu/echoscu, an Orthanc PACS process, our SCP.

The broker, database and engine fixtures come from tests/conftest.py. dcmtk and Orthanc are Debian packages
that ``.ci/run`` installs; a missing binary fails the test with the package to install (never a skip).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
from adapters.dicom.spool import Spool
from adapters.pipeline import ResultPipeline
from exchange.broker import free_port
from tests.fakes import FakePublisher  # noqa: F401 - the DICOM tests import it from here

INSTITUTION = "bj-xicheng-001"


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: apt-get install {package} (.ci/run does this)")
    return path


@pytest.fixture(scope="session")
def dcmtk() -> None:
    require("storescu", "dcmtk")
    require("echoscu", "dcmtk")


def storescu(port: int, files: list[Path], *, called: str = "HRX", calling: str = "STORESCU",
             extra: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    """Send ``files`` with dcmtk's storescu (-nh: go on after a failure); (exit code, responses, output)."""
    proc = subprocess.run(["storescu", "-v", "-nh", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, timeout=60, check=False)
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return proc.returncode, re.findall(r"Received Store Response \(([^)]*)\)", out), out


def echoscu(port: int, calling: str = "ECHOSCU", called: str = "HRX") -> tuple[int, str]:
    proc = subprocess.run(["echoscu", "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
                          capture_output=True, timeout=30, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Callable[..., DicomReceiver]]:
    """Start SCPs (stopped at teardown): ``start_receiver(pipeline, spool_dir=None, **ScpConfig fields)``."""
    started: list[tuple[DicomReceiver, Spool]] = []

    def start(pipeline: ResultPipeline, spool_dir: Path | None = None, retrieval: Retrieval | None = None,
              bootstrap: str | None = None, assemble: bool = True, **config: object) -> DicomReceiver:
        config.setdefault("host", "127.0.0.1")
        config.setdefault("port", 0)
        config.setdefault("stable_seconds", 0.5)
        spool = Spool(spool_dir or tmp_path / f"spool-{len(started)}")
        receiver = DicomReceiver(ScpConfig(**config), spool, pipeline, INSTITUTION, retrieval,  # type: ignore[arg-type]
                                 bootstrap).start(assemble=assemble)
        started.append((receiver, spool))
        return receiver

    yield start
    for receiver, spool in reversed(started):
        receiver.stop()
        spool.close()


@dataclass
class Orthanc:
    aet: str
    port: int
    http: int
    process: subprocess.Popen  # type: ignore[type-arg]

    def instances(self) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/instances", timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[[dict], Orthanc]]:  # type: ignore[type-arg]
    """Start Orthanc as a plain process (not the system service) with its own config, storage and ports."""
    binary = require("Orthanc", "orthanc")
    running: list[Orthanc] = []

    def start(modalities: dict) -> Orthanc:  # type: ignore[type-arg]
        root = tmp_path / f"orthanc-{len(running)}"
        root.mkdir()
        port, http = free_port(), free_port()
        conf = {
            "Name": "hrx-test-pacs", "DicomAet": "TESTPACS", "DicomPort": port, "HttpPort": http,
            "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "DicomModalities": modalities, "Plugins": [], "StorageCompression": False,
            "HttpTimeout": 10, "DicomScuTimeout": 10, "DicomAssociationCloseDelay": 0,
        }
        (root / "conf.json").write_text(json.dumps(conf))
        log = open(root / "orthanc.log", "wb")  # noqa: SIM115
        process = subprocess.Popen([binary, str(root / "conf.json")], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=root, start_new_session=True)
        pacs = Orthanc("TESTPACS", port, http, process)
        running.append(pacs)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited ({process.returncode}): {(root / 'orthanc.log').read_text()[-2000:]}")
            try:
                pacs.instances()
                return pacs
            except OSError:
                time.sleep(0.1)
        pytest.fail("Orthanc did not answer within 30 s")

    yield start
    for pacs in running:
        pacs.process.terminate()
        try:
            pacs.process.wait(10)
        except subprocess.TimeoutExpired:
            pacs.process.kill()
            pacs.process.wait()
