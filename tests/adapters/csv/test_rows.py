"""One row → an observation: the reference-range text split by the profile's separators."""
from __future__ import annotations

import pytest

from schemas.topics import TOPIC_LAB
from tests.adapters.csv.csvdata import lis_row, run_import, write_export


@pytest.mark.parametrize("ref, low, high", [
    ("3.5-5.3", 3.5, 5.3), ("3.5 ~ 5.3", 3.5, 5.3), ("３．５～５．３", 3.5, 5.3), ("-3-3", -3, 3), ("3.5至5.3", 3.5, 5.3),
    ("<5.2", None, 5.2), ("≤5.2", None, 5.2), (">=40", 40, None), ("阴性", None, None), ("5.3-3.5", None, None),
])
def test_reference_range_text_is_split_by_the_profile(tmp_path, pipeline, recorder, ref, low, high) -> None:  # type: ignore[no-untyped-def]
    run_import(write_export(tmp_path, [lis_row(ref=ref)]), pipeline)
    [event] = recorder.events(TOPIC_LAB)
    assert event["observations"][0]["reference_range"] == {"low": low, "high": high, "text": ref}
