"""Scale-out on real processes (chaos/scale_out.py): two APIs, three engines, the HL7 and DICOM listeners,
PostgreSQL and 12 partitions per results topic; engines SIGKILLed and restarted and one added under a stream
through every door. Every result stored exactly once, the group rebalanced over the live engines, lag zero.

Unlike the fault suite's short form (test_chaos_short.py) it restarts nothing shared: it runs beside the rest.
"""
from __future__ import annotations

import pytest

from chaos.processes import run_directory
from chaos.scale_out import scale_out

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_engines_killed_restarted_and_added_store_every_result_once() -> None:
    with run_directory("scale-out") as root:
        figures = scale_out(root)
    print(figures.line())
    assert figures.ok, figures.line()
