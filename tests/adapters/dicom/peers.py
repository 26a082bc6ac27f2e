"""The DICOM adapter's counterparts in tests: dcmtk's storescu/echoscu, an Orthanc PACS, a broker stand-in.

dcmtk and Orthanc are Debian packages that ``.ci/run`` installs; a missing binary fails the test with the
package to install (never a skip).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTITUTION = "bj-xicheng-001"


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: apt-get install {package} (.ci/run does this)")
    return path


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


@dataclass
class Orthanc:
    aet: str
    port: int
    http: int
    process: subprocess.Popen  # type: ignore[type-arg]

    def instances(self) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/instances", timeout=10) as resp:
            return json.loads(resp.read())

    def delete_study(self, study_uid: str) -> None:
        """Delete a study through the REST API (a hospital replacing it in its PACS)."""
        lookup = urllib.request.Request(f"http://127.0.0.1:{self.http}/tools/lookup", data=study_uid.encode(),
                                        method="POST")
        with urllib.request.urlopen(lookup, timeout=10) as resp:
            (match,) = [m for m in json.loads(resp.read()) if m["Type"] == "Study"]
        delete = urllib.request.Request(f"http://127.0.0.1:{self.http}/studies/{match['ID']}", method="DELETE")
        with urllib.request.urlopen(delete, timeout=10):
            pass
