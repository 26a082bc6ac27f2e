"""Regression corpus: the FHIR R4 specification's examples through the real adapter.

Each published example (tests/data/fhir/examples, from ``hl7.fhir.r4.examples`` 4.0.1) is run twice: as
published, and localised with only what the exchange's profile adds to FHIR R4 (tests/adapters/fhir_examples.py).
Each run has its expected outcome: stored as which kind of result, with which unified items — or refused
with which message at which element. Derived variants (contained resources, a panel cycle, an ImagingStudy
attached, a code with text only) are built from the same files and named as derived.
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field

import pytest

from adapters.fhir import CODE_TEXT_SYSTEM, bundle_events, operation_outcome
from adapters.report import AdapterError
from adapters.pipeline import ResultPipeline
from schemas import events
from tests.adapters.fhir_examples import RESIDENT_ID, as_bundle, contained_form, example, localise, reports

CBC_ITEMS = {"L0165": 1, "L0166": 1, "L0167": 1, "L0168": 1, "L0169": 1, "L0170": 1, "L0174": 1, "L0178": 1,
             "L0179": 1, "L0180": 1, "L0181": 1, "L0182": 1, "L0183": 1, "L0184": 1, "L0185": 1, "L0186": 1,
             "L0187": 1}
#: Bundle-ghp's chemistry panel (p1) members with a unified item, LOINC-coded.
GHP_CHEMISTRY = {"L0001": 1, "L0002": 1, "L0003": 1, "L0004": 1, "L0005": 1, "L0006": 1, "L0007": 1, "L0009": 1,
                 "L0010": 1, "L0019": 1, "L0026": 1, "L0027": 1, "L0032": 1, "L0045": 1, "L0046": 1, "L0047": 1,
                 "L0048": 1, "L0050": 1}


@dataclass(frozen=True)
class Stored:
    """Stored as one result of ``kind`` under ``result_id``; ``item``: the report's unified item."""

    kind: str
    result_id: str
    item: str | None
    observations: int = 0
    mapped: dict[str, int] = field(default_factory=dict)  # unified item → observations mapped to it


@dataclass(frozen=True)
class Refused:
    location: str
    words: str


@dataclass(frozen=True)
class Case:
    name: str
    published: Refused
    localised: Stored | Refused
    extra: tuple[str, ...] = ()
    identifier: str | None = None  # added by the localisation only because the example has none


NO_ISSUER = Refused("Bundle.entry[0].resource.performer", "no performer Organization identified")
NO_IDENTIFIER = Refused("Bundle.entry[0].resource.identifier", "DiagnosticReport.identifier is required")

CASES = [
    Case("Bundle-101", NO_ISSUER,
         Stored("lab", "http://acme.com/lab/reports|5234342", None, 17, CBC_ITEMS)),
    # LOINC 35200-5, 35217-9, 2085-9 and 13457-7 are the mass-concentration codes: no unified item carries them.
    # The lipid panel's four members map through codes/data/loinc_equivalents.csv, the report to 血脂四项.
    Case("Bundle-lipids", NO_ISSUER, Stored("lab", "http://acme.com/lab/reports|5234342", "L0266", 4,
                                            {"L0037": 1, "L0038": 1, "L0039": 1, "L0040": 1})),
    # 3 panels (hasMember) of 22 + 17 + 9 members.
    Case("Bundle-ghp", NO_ISSUER,
         Stored("lab", "http://acme.com/lab/reports|ghp-example", None, 51, {**GHP_CHEMISTRY, **CBC_ITEMS})),
    # 7 results; 3 organisms with 1 + 4 + 4 members (growth and susceptibilities), and the Gram stains.
    Case("Bundle-lri-example", NO_ISSUER,
         Stored("lab", "https://acme.org/identifiers|RP723234", "L0251", 24, {"L0251": 6, "L0254": 12})),
    # 1 organism panel → 2 observations and 2 nested panels of 19 and 1 members.
    Case("Bundle-micro", NO_ISSUER, Stored("lab", "http://hnam.org/identifiers/orders|290741144", None, 25)),
    Case("Bundle-report", NO_IDENTIFIER, Stored("lab", "urn:example:localised|bm-1", None, 13, {"L0168": 1}),
         identifier="bm-1"),
    # Observation f004's reference range text is longer than the event contract's 256 characters.
    Case("Bundle-f001", NO_ISSUER, Refused("Bundle.entry[5].resource", "reference_range.text"),
         extra=("Observation-f001", "Observation-f002", "Observation-f003", "Observation-f004", "Observation-f005")),
    # The report's SNOMED code is unmapped: its item is inferred from its one result.
    Case("Bundle-f202", NO_IDENTIFIER, Stored("lab", "urn:example:localised|f202", "L0249", 1, {"L0249": 1}),
         extra=("Observation-f206",), identifier="f202"),
    Case("DiagnosticReport-f201", NO_IDENTIFIER, Stored("imaging", "urn:example:localised|f201", None),
         identifier="f201"),
    Case("DiagnosticReport-ultrasound", NO_IDENTIFIER, Stored("imaging", "urn:example:localised|us-1", None),
         identifier="us-1"),
    Case("DiagnosticReport-102", NO_IDENTIFIER, Stored("lab", "urn:example:localised|dxa-1", None, 1),
         extra=("Observation-bmd",), identifier="dxa-1"),
    Case("DiagnosticReport-pap", NO_IDENTIFIER,
         Refused("Bundle.entry[0].resource.result", "result lists no Observation"), identifier="pap-1"),
    Case("Bundle-hla-1", NO_IDENTIFIER, Stored("lab", "urn:example:localised|hla-1", None, 3), identifier="hla-1"),
    # Its Observations are published as separate examples the Bundle does not hold.
    Case("Bundle-dg2", NO_IDENTIFIER,
         Refused("Bundle.entry[0].resource.result[0]", "'Observation/ob-genetics-3-1' does not resolve"),
         identifier="dg2"),
]


@pytest.fixture
def pipeline(book, pseudonymizer) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer)


def _expect(pipeline: ResultPipeline, bundle: dict, expected: Stored | Refused) -> list[dict]:  # type: ignore[type-arg]
    if isinstance(expected, Refused):
        with pytest.raises(AdapterError) as info:
            bundle_events(pipeline, bundle)
        assert info.value.location == expected.location and expected.words in info.value.message, info.value
        outcome = json.dumps(operation_outcome(info.value))
        assert RESIDENT_ID not in outcome and len(outcome) < 5000
        return []
    [event] = bundle_events(pipeline, bundle)
    events.validate(f"{expected.kind}-result.v1", event)
    assert RESIDENT_ID not in json.dumps(event)
    assert (event["result_id"], event["item"]["unified_code"]) == (expected.result_id, expected.item)
    observations = event.get("observations", [])
    assert len(observations) == expected.observations
    mapped = Counter(o["item"]["unified_code"] for o in observations if o["item"]["unified_code"])
    assert dict(mapped) == expected.mapped
    return [event]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_published_examples(pipeline, case: Case) -> None:  # type: ignore[no-untyped-def]
    extra = [example(name) for name in case.extra]
    _expect(pipeline, as_bundle(example(case.name), *extra), case.published)
    _expect(pipeline, localise(example(case.name), *extra, identifier=case.identifier), case.localised)


def _local_codes(event: dict) -> list[str]:  # type: ignore[type-arg]
    return [o["item"]["local_code"] for o in event["observations"]]


def _depth_first(bundle: dict) -> list[set[str]]:  # type: ignore[type-arg]
    """The codes of the report's results and their members, depth-first, read from the example itself."""
    by_ref = {f"Observation/{e['resource']['id']}": e["resource"] for e in bundle["entry"]
              if e["resource"]["resourceType"] == "Observation"}

    def walk(ref: str) -> list[set[str]]:
        obs = by_ref[ref]
        codes = {c["code"] for c in obs["code"].get("coding", [])}
        return [codes] + [c for m in obs.get("hasMember", []) for c in walk(m["reference"])]

    return [c for r in reports(bundle)[0]["result"] for c in walk(r["reference"])]


def test_panel_members_and_nested_panels_are_the_reports_observations(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = localise(example("Bundle-ghp"))
    [ghp] = bundle_events(pipeline, bundle)
    codes = _local_codes(ghp)
    # Each panel comes first, then its members, depth-first; every Observation once.
    expected = _depth_first(bundle)
    assert len(codes) == len(expected) == 51 and all(c in e for c, e in zip(codes, expected))
    assert codes[0] == "24323-8" and codes[23] == "58410-2" and codes[24] == "718-7"
    assert ghp["observations"][0]["value_type"] == "none"  # the panel itself: a code, no value

    [micro] = bundle_events(pipeline, localise(example("Bundle-micro")))
    codes = _local_codes(micro)
    # org1 → obx1-4, obx1-5, the nested panel obr-2 (19 members) and obr-3 (1 member).
    assert codes[0] == "Staaur" and codes.index("60790") < codes.index("60512") < codes.index("60418")
    assert codes[-1] == "60036" and len(codes) == 25

    [culture] = bundle_events(pipeline, localise(example("Bundle-lri-example")))
    values = [o["value_text"] for o in culture["observations"]]
    assert "Klebsiella pneumonia" in values and "Heavy growth" in values
    assert sum(1 for o in culture["observations"] if o["comparator"] == "<") == 6  # the MICs


def test_a_panel_that_contains_itself_is_refused(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Derived from Bundle-ghp: its haemoglobin result names the CBC panel as a member."""
    bundle = localise(example("Bundle-ghp"))
    r1 = next(e["resource"] for e in bundle["entry"] if e["resource"].get("id") == "r1")
    r1["hasMember"] = [{"reference": "Observation/p2"}]
    with pytest.raises(AdapterError) as info:
        bundle_events(pipeline, bundle)
    assert "hasMember cycle: Observation/p2 → Observation/r1 → Observation/p2" in info.value.message
    assert info.value.location is not None and info.value.location.endswith(".hasMember[0]")


def test_contained_observations_are_resolved(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Derived from Bundle-lipids: the same four Observations contained in the report, referenced as #id."""
    bundle = localise(example("Bundle-lipids"))
    [as_entries] = bundle_events(pipeline, bundle)
    derived = contained_form(bundle)
    assert [r["reference"] for r in reports(derived)[0]["result"]] == [
        "#cholesterol", "#triglyceride", "#hdlcholesterol", "#ldlcholesterol"]
    [as_contained] = bundle_events(pipeline, derived)
    assert [(o["item"], o["value"], o["unit"]) for o in as_contained["observations"]] == [
        (o["item"], o["value"], o["unit"]) for o in as_entries["observations"]]
    assert [o["value"] for o in as_contained["observations"]] == [6.3, 1.3, 1.3, 4.6]
    # A contained panel's members are found among the same container's resources.
    derived["entry"][0]["resource"]["contained"][0]["hasMember"] = [{"reference": "#hdlcholesterol"}]
    [panel] = bundle_events(pipeline, derived)
    assert len(panel["observations"]) == 4
    derived["entry"][0]["resource"]["contained"][0]["hasMember"] = [{"reference": "#missing"}]
    with pytest.raises(AdapterError, match="among the contained resources"):
        bundle_events(pipeline, derived)


def test_codes_with_text_only_are_kept_and_the_item_inferred(pipeline) -> None:  # type: ignore[no-untyped-def]
    [marrow] = bundle_events(pipeline, localise(example("Bundle-report"), identifier="bm-1"))
    assert marrow["item"]["local_code"] == "comprehensive bone marrow report"
    assert marrow["item"]["local_system"] == CODE_TEXT_SYSTEM and marrow["item"]["unified_code"] is None
    last = marrow["observations"][-1]["item"]
    assert (last["local_code"], last["local_system"]) == ("AML-associated genetic abnormalities", CODE_TEXT_SYSTEM)
    # Derived from Bundle-f202: its report code reduced to its text; the one result gives the item.
    bundle = localise(example("Bundle-f202"), example("Observation-f206"), identifier="f202")
    reports(bundle)[0]["code"] = {"text": "Blood culture"}
    [culture] = bundle_events(pipeline, bundle)
    assert culture["item"]["unified_code"] == "L0249" and culture["item"]["local_name"] == "Blood culture"


def test_an_imaging_report_is_an_imaging_result(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = localise(example("DiagnosticReport-f201"), identifier="f201")
    [ct] = bundle_events(pipeline, bundle)
    assert ct["schema"] == "hr.imaging-result.v1" and ct["status"] == "final"
    assert ct["report"] == {"findings": None, "impression": "CT brains: large tumor sphenoid/clivus."}
    assert (ct["item"]["local_code"], ct["item"]["local_system"]) == ("429858000", "http://snomed.info/sct")
    study = ct["study"]
    assert study["modality"] == "OT" and study["description"] == "CT of head-neck"
    assert study["study_at"] == "2012-12-01T12:00:00+01:00" and ct["retrieval"] is None
    # No ImagingStudy: the study UID is derived from the report's key, the same at every resend.
    assert study["study_instance_uid"].startswith("2.25.")
    assert bundle_events(pipeline, copy.deepcopy(bundle))[0]["study"] == study


def test_an_imaging_study_gives_the_retrieval_pointer(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Derived: DiagnosticReport-f201 pointing at ImagingStudy-example-xr (with its WADO-RS Endpoint)."""
    bundle = localise(example("DiagnosticReport-f201"), example("ImagingStudy-example-xr"),
                      example("Endpoint-example-wadors"), identifier="f201")
    reports(bundle)[0]["imagingStudy"] = [{"reference": "ImagingStudy/example-xr"}]
    [xr] = bundle_events(pipeline, bundle)
    assert xr["study"] == {
        "study_instance_uid": "2.16.124.113543.6003.1154777499.30246.19789.3503430046",
        "accession_number": "W12342398", "modality": "DX", "body_part": "Wrist Joint", "technique": None,
        "description": "XR Wrist 3+ Views", "series_count": 1, "instance_count": 2,
        "study_at": "2017-01-01T11:01:20+03:00"}
    assert xr["retrieval"] == {"wado_rs": "https://pacs.hospital.org/wado-rs"}
    # Keyed by the accession number, as the DICOM study and an HL7 radiology report of it are.
    assert xr["result_id"] == "W12342398"
    # The report's code first, then the study's procedure code, as the procedure codes.
    assert xr["item"]["local_code"] == "429858000"
    reports(bundle)[0]["imagingStudy"].append({"reference": "ImagingStudy/other"})
    with pytest.raises(AdapterError, match="one report per study"):
        bundle_events(pipeline, bundle)


def test_a_radiology_category_makes_an_imaging_report(pipeline) -> None:  # type: ignore[no-untyped-def]
    [us] = bundle_events(pipeline, localise(example("DiagnosticReport-ultrasound"), identifier="us-1"))
    assert us["schema"] == "hr.imaging-result.v1" and us["report"]["impression"] == "Unremarkable study"
    # Derived: the v2-0074 section "RUS" (radiology ultrasound) names the modality.
    bundle = localise(example("DiagnosticReport-ultrasound"), identifier="us-1")
    reports(bundle)[0]["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                                    "code": "RUS"}]}]
    [typed] = bundle_events(pipeline, bundle)
    assert typed["study"]["modality"] == "US"


def test_same_identifier_value_under_other_systems_stays_apart(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Bundle-101 and Bundle-lipids share system and value; the value alone under another system is another
    report, and the issuer's own report-number system is the bare number."""
    [cbc] = bundle_events(pipeline, localise(example("Bundle-101")))
    other = localise(example("Bundle-101"))
    reports(other)[0]["identifier"][0]["system"] = "http://acme.com/lab/other-reports"
    [moved] = bundle_events(pipeline, other)
    assert cbc["result_id"] != moved["result_id"] == "http://acme.com/lab/other-reports|5234342"
    reports(other)[0]["identifier"][0]["system"] = "urn:hrx:report-id:bj-xicheng-001"
    assert bundle_events(pipeline, other)[0]["result_id"] == "5234342"
    del reports(other)[0]["identifier"][0]["system"]
    assert bundle_events(pipeline, other)[0]["result_id"] == "5234342"
