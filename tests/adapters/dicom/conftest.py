"""DICOM peers for the adapter tests, as fixtures: dcmtk, our SCP, an Orthanc PACS process (see peers.py).

The broker, database and engine fixtures come from the suite's plugin (tests/fixtures/).
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
from adapters.dicom.spool import Spool
from adapters.pipeline import ResultPipeline
from exchange.broker import free_port

from .peers import INSTITUTION, Orthanc, require


@pytest.fixture(scope="session")
def dcmtk() -> None:
    require("storescu", "dcmtk")
    require("echoscu", "dcmtk")


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
