"""The fault suite's oracles on made-up timelines: what may be lost when the broker dies, and what not."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from chaos.broker_restart import Timeline, classify
from chaos.data import Item
from chaos.doors import Delivery, Sender, out_of_resources
from chaos.figures import Figures
from chaos.stores import duplicates

A, B, C, D = (("h", k) for k in "ABCD")


class _Door:
    name = "hl7"

    def send(self, item: Item) -> str:
        raise AssertionError("not sent in these tests")

    def close(self) -> None:
        pass


def _sender(door: str, acknowledged: dict[tuple[str, str], float | None]) -> Sender:
    stub = _Door()
    stub.name = door
    sender = Sender(stub, lambda n: Item([]), rate=1.0)
    sender.deliveries = [Delivery(Item([key]), tries=1, acknowledged_at=at) for key, at in acknowledged.items()]
    return sender


def _timeline(stored: set[tuple[str, str]], published: set[tuple[str, str]] = frozenset()) -> Timeline:
    """One kill at t=10, the broker back at t=20; ``stored`` / ``published`` as read while it was down."""
    return Timeline(kills=[10.0], backs=[20.0], stored_while_down=[set(stored)],
                    spool_published_while_down=[set(published)])


def test_acknowledged_before_the_kill_and_not_yet_storedmay_be_lost() -> None:
    sender = _sender("hl7", {A: 5.0, B: 6.0, C: 25.0, D: None})
    must, allowed = classify({"hl7": sender}, _timeline(stored={A}))
    assert allowed == {B}  # acknowledged, then the broker died before the engine stored it
    assert must == {A, C}  # already stored; acknowledged by the restarted broker. D was never acknowledged.


def test_an_acknowledgement_racing_the_kill_belongs_to_the_killed_broker() -> None:
    must, allowed = classify({"fhir": _sender("fhir", {A: 12.0})}, _timeline(stored=set()))
    assert allowed == {A} and not must


def test_a_dicom_studymay_be_lost_only_once_published() -> None:
    # A: 0x0000 before the kill, still in the spool (unpublished) while the broker was down: must be stored.
    # B: published before the kill, not stored: may be lost. C: answered while the broker was down.
    sender = _sender("dicom", {A: 5.0, B: 6.0, C: 15.0})
    must, allowed = classify({"dicom": sender}, _timeline(stored=set(), published={B}))
    assert allowed == {B}
    assert must == {A, C}


def test_a_report_allowed_to_be_lost_at_one_kill_is_judged_at_every_kill() -> None:
    timeline = Timeline(kills=[10.0, 30.0], backs=[20.0, 40.0], stored_while_down=[{A}, {A}],
                        spool_published_while_down=[set(), set()])
    must, allowed = classify({"csv": _sender("csv", {A: 5.0, B: 25.0, C: 45.0})}, timeline)
    assert allowed == {B}  # acknowledged by the second broker, not stored when it died
    assert must == {A, C}


def test_a_report_the_engine_passed_over_while_the_broker_was_up_may_not_be_lost() -> None:
    timeline = _timeline(stored=set())
    timeline.passed_over = [{B}, set()]  # B was still not stored long after it was acknowledged
    must, allowed = classify({"fhir": _sender("fhir", {A: 5.0, B: 6.0})}, timeline)
    assert allowed == {A}
    assert must == {B}


def test_duplicates_count_rows_beyond_the_first() -> None:
    assert duplicates(Counter({A: 1, B: 3, C: 2})) == 3
    assert duplicates(Counter()) == 0


def test_dcmtk_out_of_resources_texts() -> None:
    assert out_of_resources("Refused: OutOfResources")
    assert out_of_resources("A700: Refused: Out of Resources")
    assert not out_of_resources("Success")
    assert not out_of_resources("Error: CannotUnderstand")


def test_figures_fail_on_any_clause_and_print_it() -> None:
    figures = Figures("s", "v")
    figures.expect(True, "never shown")
    assert figures.ok
    figures.expect(False, "2 lost")
    assert not figures.ok
    assert figures.line().endswith("FAIL: 2 lost")
    assert "lag back to zero in never" in figures.line()
    assert "n/a" in Figures("s", "v", lag_applies=False).line()


def test_data_items_carry_their_store_keys(tmp_path: Path) -> None:
    from chaos import data

    export = data.csv_export(tmp_path, 3, 9, reports=4)
    assert export.keys == [(data.CSV_INSTITUTION, f"CSV-9-00003-{k:03d}") for k in range(4)]
    text = export.files[0].read_text(encoding="utf-8").splitlines()
    assert len(text) == 5 and all(f"CSV-9-00003-{k:03d}" in text[k + 1] for k in range(4))
    message = data.hl7_item(7, 9)
    assert message.keys == [(data.HL7_INSTITUTION, "CH9-0000007")]
    assert b"|CH9-0000007|" in message.payload and b"CY2403150088" not in message.payload
