"""The puller's state and schedule without a PACS: back-off, giving up, the watermark, what a run attempts."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters.dicom.pull import FoundStudy, MoveOutcome, Puller
from adapters.dicom.pull_state import GivenUp, PullState, Retry, RetryPolicy, describe
from adapters.dicom.scp import ReceiverStats
from adapters.dicom.spool import Spool, read_state
from codes.calendar import beijing_now


def test_back_off_doubles_from_the_delay_up_to_the_longest_wait() -> None:
    policy = RetryPolicy(attempts=8, delay=600, max_delay=3000)
    assert [policy.wait_after(n) for n in range(1, 6)] == [600, 1200, 2400, 3000, 3000]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(delay=600, max_delay=60)


def test_a_failed_study_is_scheduled_then_given_up_after_its_last_attempt() -> None:
    state, policy = PullState("20260101"), RetryPolicy(attempts=3, delay=100, max_delay=1000)
    first = state.mark_failed("1.2.3", "20251231", False, "C-MOVE ended with status 0xC000", 1000.0, policy)
    assert first == Retry("20251231", False, 1, 1100.0, 1000.0, "C-MOVE ended with status 0xC000")
    second = state.mark_failed("1.2.3", "20251231", False, "no final response", 1100.0, policy)
    assert second == Retry("20251231", False, 2, 1300.0, 1000.0, "no final response")
    third = state.mark_failed("1.2.3", "20251231", False, "no final response", 1300.0, policy)
    assert third == GivenUp("20251231", False, 3, 1300.0, "no final response")
    assert state.retry == {} and state.given_up == {"1.2.3": third}
    assert PullState.from_json(state.to_json()) == state

    state.mark_failed("4.5", "", True, "refused", 0.0, policy)
    state.mark_done("4.5", "20251230", undated=True)
    assert state.retry == {} and state.done_undated == {"4.5": "20251230"} and state.is_done("4.5")


def test_a_state_written_before_retries_reads_with_nothing_to_retry() -> None:
    state = PullState.from_json({"date": "20040826", "done": {"1.2": "20040826"}})
    assert state == PullState("20040826", done={"1.2": "20040826"})


def test_the_watermark_never_passes_today_and_done_is_pruned_below_the_look_back() -> None:
    state = PullState("20260101", done={"old": "20251230", "kept": "20260102"},
                      done_undated={"u-old": "20251229", "u-kept": "20260103"})
    state.retry["failed"] = Retry("20260101", False, 1, 0.0, 0.0, "refused")
    state.advance(["20260102", "20990101"], today="20260103", lookback_days=1)
    assert state.date == "20260103"  # not 2099, and not held by the failed study of 20260101
    assert state.done == {"kept": "20260102"} and state.done_undated == {"u-kept": "20260103"}
    state.advance([], today="20260110", lookback_days=1)
    assert state.date == "20260103"  # nothing found: the watermark stays


class ScriptedPuller(Puller):
    """A puller whose PACS is a script: ``dated``/``undated`` C-FIND answers, ``failing`` studies' C-MOVEs fail."""

    dated: list[FoundStudy]
    undated: list[FoundStudy]
    failing: set[str]
    moved: list[str]

    def find(self, from_date: str) -> list[FoundStudy]:
        return [s for s in self.dated if s.key_date >= from_date]

    def find_without_study_date(self, from_date: str) -> list[FoundStudy]:
        return [s for s in self.undated if s.key_date >= from_date]

    def move(self, study_uid: str) -> MoveOutcome:
        self.moved.append(study_uid)
        if study_uid in self.failing:
            return MoveOutcome(False, 1, "1 instance(s) refused as unusable (0xC010 no resident ID)")
        return MoveOutcome(True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[ScriptedPuller]:
    spool = Spool(tmp_path / "spool")
    receiver = SimpleNamespace(spool=spool, handler=SimpleNamespace(stats=ReceiverStats()),
                               config=SimpleNamespace(ae_title="HRXPULL", max_pdu=65536))
    puller = ScriptedPuller(receiver, "pacs.example", 104, "PACS", date(2004, 1, 19),  # type: ignore[arg-type]
                            lookback_days=0, retry=RetryPolicy(attempts=3, delay=60, max_delay=600), clock=Clock())
    puller.dated, puller.undated, puller.failing, puller.moved = [], [], set(), []
    yield puller
    spool.close()


def test_a_run_retries_due_studies_only_found_or_not_and_lists_what_it_skipped(scripted: ScriptedPuller) -> None:
    clock = scripted.clock
    assert isinstance(clock, Clock)
    bad, good = FoundStudy("1.1", "20040119"), FoundStudy("1.2", "20040119")
    undated = FoundStudy("1.3", "20040120", undated=True)  # key date: its SeriesDate
    scripted.dated, scripted.undated, scripted.failing = [bad, good], [undated], {"1.1"}

    first = scripted.run_once()
    assert scripted.moved == ["1.1", "1.2", "1.3"]
    assert first.retrieved == 2 and list(first.failed) == ["1.1"] and first.found_undated == 1

    scripted.moved.clear()
    clock.now += 59  # not due yet (60 s after the first attempt)
    waiting = scripted.run_once()
    assert scripted.moved == [] and waiting.waiting == 1 and waiting.skipped == 1  # only 1.3 is >= 20040120
    assert "1 study(ies) wait for their next attempt" in "\n".join(waiting.lines())

    # a later study moves the watermark (look-back 0): the failed one is no longer found, but retried when due
    scripted.dated = [bad, good, FoundStudy("1.4", "20991231")]
    clock.now += 1
    second = scripted.run_once()
    assert scripted.moved == ["1.1", "1.4"] and list(second.failed) == ["1.1"]
    assert second.watermark == beijing_now().strftime("%Y%m%d")  # the 2099 study does not push it further
    scripted.moved.clear()
    clock.now += 120
    third = scripted.run_once()
    assert scripted.moved == ["1.1"] and third.given_up == {"1.1": "1 instance(s) refused as unusable "
                                                                    "(0xC010 no resident ID)"}
    scripted.moved.clear()
    clock.now += 10_000
    scripted.run_once()
    assert scripted.moved == []  # given up: never tried again

    stored = read_state(scripted.receiver.spool.directory, scripted.state_name)
    report = describe(scripted.state_name, PullState.from_json(stored), lookback_days=0)
    assert [(g["study_uid"], g["attempts"]) for g in report["given_up"]] == [("1.1", 3)]
    assert report["retry"] == [] and {d["study_uid"] for d in report["done"]} >= {"1.4"}
