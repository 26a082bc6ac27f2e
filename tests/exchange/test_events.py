import pytest
from jsonschema import Draft202012Validator

import schemas
from schemas import events
from schemas.dead_letter import dead_letter_event
from schemas.resident_id import make_resident_id
from tests.fixtures.events import lab_event


@pytest.mark.parametrize("name", schemas.NAMES)
def test_every_schema_file_is_a_valid_draft_2020_12_schema(name: str) -> None:
    Draft202012Validator.check_schema(schemas.load(name))


def test_a_valid_lab_event_round_trips() -> None:
    event = lab_event()
    assert events.decode("lab-result.v1", events.encode(event)) == event


@pytest.mark.parametrize("change, path", [
    (lambda e: e.update(status="done"), "$.status"),
    (lambda e: e.update(version=0), "$.version"),
    (lambda e: e["patient"].update(pseudonym="110105194912310021"), "$.patient.pseudonym"),
    (lambda e: e.update(reported_at="yesterday"), "$.reported_at"),
    (lambda e: e.update(observations=[]), "$.observations"),
    (lambda e: e.update(extra=1), "$"),
])
def test_invalid_events_name_the_offending_path(change, path: str) -> None:  # type: ignore[no-untyped-def]
    event = lab_event()
    change(event)
    with pytest.raises(events.InvalidEvent) as info:
        events.validate("lab-result.v1", event)
    assert any(err.startswith(path) for err in info.value.errors), info.value.errors


def test_non_json_is_an_invalid_event() -> None:
    with pytest.raises(events.InvalidEvent, match="not JSON"):
        events.decode("lab-result.v1", b"\xff{")


def test_dead_letters_never_carry_a_resident_id() -> None:
    rid = make_resident_id("44030419900101123")
    letter = dead_letter_event(f"bad patient {rid}", f'{{"pid": "{rid}"}}', topic="t", partition=0, offset=7)
    assert rid not in events.encode(letter).decode()
    assert letter["origin"] == {"kind": "topic", "topic": "t", "partition": 0, "offset": 7, "file": None,
                                "line": None, "adapter": None, "institution": None}
