"""What a hook request says: the patient (pseudonym or prefetched resident ID), the clinician, the draft orders
and their unified items; malformed parts are refused with the field at fault."""
from __future__ import annotations

from typing import Any

import pytest

from exchange.cds.context import HookRequestError, clinician_of, draft_orders, patient_pseudonym
from schemas.resident_id import make_resident_id

RESIDENT_ID = make_resident_id("11010519800312002")
REQUESTER = "bj-chaoyang-001"


def _bundle(*resources: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def _order(order_id: str, *codings: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": order_id, "status": "draft", "intent": "proposal",
            "code": {"coding": list(codings)}}


def test_the_patient_is_the_prefetched_resident_id_else_the_pseudonym(pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    expected = pseudonymizer.pseudonym(RESIDENT_ID)
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:example:mrn", "value": "M1"},
                                                         {"system": "urn:oid:2.16.156.10011.1.3", "value": RESIDENT_ID}]}
    assert patient_pseudonym(pseudonymizer, "ehr-1", patient) == expected
    assert patient_pseudonym(pseudonymizer, "a" * 64, {"resourceType": "OperationOutcome"}) == "a" * 64
    with pytest.raises(HookRequestError) as unknown:
        patient_pseudonym(pseudonymizer, "ehr-1", {"resourceType": "Patient", "identifier": "not-a-list"})
    assert unknown.value.status == 412
    with pytest.raises(HookRequestError) as invalid:
        patient_pseudonym(pseudonymizer, "a" * 64, {"resourceType": "Patient", "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.3", "value": "110105198003120020"}]})  # wrong check digit
    assert (invalid.value.status, invalid.value.field) == (400, "prefetch.patient.identifier")


@pytest.mark.parametrize(("user_id", "clinician"), [
    ("Practitioner/dr-wang", "dr-wang"), ("PractitionerRole/r-9", "r-9"), ("dr-li", "dr-li"), ("", None), (None, None)])
def test_the_clinician_of_user_id(user_id: str | None, clinician: str | None) -> None:
    assert clinician_of(user_id) == clinician


def test_draft_orders_map_through_the_requesters_table_and_loinc(book) -> None:  # type: ignore[no-untyped-def]
    orders = draft_orders(book, REQUESTER, _bundle(
        _order("glu", {"system": "http://loinc.org", "code": "14749-6"}),
        _order("alt", {"system": f"urn:hrx:local-code:{REQUESTER}", "code": "ALT"}),
        _order("two", {"system": "urn:example", "code": "nothing"}, {"code": "K"}),  # the first that maps wins
        _order("none", {"system": "urn:example", "code": "nothing"}),
        {"resourceType": "MedicationRequest", "id": "med"}), None)
    assert [(o.reference, o.item_code) for o in orders] == [
        ("ServiceRequest/glu", "L0032"), ("ServiceRequest/alt", "L0001"), ("ServiceRequest/two", "L0045"),
        ("ServiceRequest/none", None)]
    chosen = draft_orders(book, REQUESTER, _bundle(_order("glu", {"code": "GLU"}), _order("alt", {"code": "ALT"})),
                          ["ServiceRequest/alt"])
    assert [o.order_id for o in chosen] == ["alt"]


@pytest.mark.parametrize(("bundle", "field"), [
    ({"resourceType": "Parameters"}, "context.draftOrders"),
    ({"resourceType": "Bundle", "entry": {"resource": {}}}, "context.draftOrders.entry"),
    ({"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}, "context.draftOrders.entry[0]"),
    (_bundle({"resourceType": "ServiceRequest", "code": "GLU"}), "context.draftOrders.entry[0].resource.code"),
    (_bundle(_order("x", {"system": 7, "code": "GLU"})), "context.draftOrders.entry[0].resource.code.coding[0]"),
])
def test_malformed_draft_orders_are_refused_naming_the_field(book, bundle: Any, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HookRequestError) as refused:
        draft_orders(book, REQUESTER, bundle, None)
    assert (refused.value.status, refused.value.field) == (400, field)
