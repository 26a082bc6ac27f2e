"""The fault suite's short form (``python -m chaos --short``, chaos/): every scenario's oracle must hold.

Together about three minutes: the engine killed 3× mid-stream (SQLite and PostgreSQL at once), the embedded
broker killed once under load at every door, PostgreSQL restarted once mid-ingest, the DICOM spool's tmpfs
filled (the last two need root and the machine's cluster: CI runs them serially, as ``make test`` does).
"""
from __future__ import annotations

import pytest

from chaos.__main__ import SCENARIOS, run_scenario

pytestmark = [pytest.mark.integration, pytest.mark.serial]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_short_form_meets_its_oracle(scenario: str) -> None:
    figures = run_scenario(scenario, short=True)
    report = "\n".join(one.line() for one in figures)
    print(report)
    assert figures, f"{scenario} produced no figures"
    assert all(one.ok for one in figures), report
