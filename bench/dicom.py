"""4. DICOM receive: instances/s from dcmtk storescu into our SCP vs Orthanc and dcmtk storescp.

NOT DONE YET (placeholder, no stub figures): adapters/dicom/scp.py appeared while this benchmark suite was
written and was still being finished by another engineer; the benchmark was not implemented in this pass.
Plan: generate N small CT instances with pydicom, ``storescu -aet BENCH +sd <dir> host port`` against (a) our
SCP (adapters/dicom/scp.py, started as in its CLI), (b) ``Orthanc`` with a throwaway config, (c) ``storescp``
writing to a temp dir; instances/s = N / wall time of storescu; ratio ours / storescp and ours / Orthanc.
"""
from __future__ import annotations

from pathlib import Path

from bench.common import Outcome


def run(quick: bool = False) -> Outcome:
    scp = Path(__file__).resolve().parent.parent / "adapters" / "dicom" / "scp.py"
    out = Outcome("dicom", "DICOM receive: instances/s, storescu → our SCP vs Orthanc and storescp", status="not-done")
    out.notes.append(f"not implemented yet; adapters/dicom/scp.py {'exists' if scp.exists() else 'is missing'} "
                     "(see bench/dicom.py for the plan)")
    return out
