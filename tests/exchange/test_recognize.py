"""The recognition rules, table-driven on a controlled code world (tests/data/codes-world), plus properties."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codes import CodeBook
from exchange.recognize import (FINAL_STATUSES, Prior, RecognitionMemo, Recognizer, Status, _failing, _judge, _stamp,
                                recognize)

CST = timezone(timedelta(hours=8))
T = datetime(2026, 3, 10, 8, 0, tzinfo=CST)
LIVER = frozenset(f"L{n:04d}" for n in range(1, 13))  # the liver panel L0264's components


def answer(world: CodeBook, requester: str, issuer: str, item: str | None, *, at: datetime,
           t: datetime = T, status: str = "final", present: frozenset[str] = frozenset()):  # type: ignore[no-untyped-def]
    return recognize(world, Prior(issuer, item, status, t, present), requester, at)


@pytest.mark.parametrize("requester, issuer, item, at, expected", [
    # every tier: the narrowest one that recognizes is reported
    ("bj-a2", "bj-a1", "L0032", T + timedelta(days=1), (Status.RECOGNIZABLE, "alliance", "alliance-x")),
    ("bj-b1", "bj-a1", "L0032", T + timedelta(days=1), (Status.RECOGNIZABLE, "city", "city-bj")),
    ("bj-b1", "bj-a1", "L0045", T + timedelta(days=1), (Status.RECOGNIZABLE, "province", "province-bj")),
    ("tj-t1", "bj-a1", "L0032", T + timedelta(days=1), (Status.RECOGNIZABLE, "region", "region-jjj")),
    ("sc-c1", "bj-a1", "L0033", T + timedelta(days=1), (Status.RECOGNIZABLE, "national", "national-x")),
    # Shandong is a 京津冀 member for lab items (京津冀鲁)
    ("sd-q1", "bj-a1", "L0032", T + timedelta(days=1), (Status.RECOGNIZABLE, "region", "region-jjj")),
    # the wider tier's longer window keeps a result reusable after the narrow one expired
    ("bj-b1", "bj-a1", "L0032", T + timedelta(days=8), (Status.RECOGNIZABLE, "province", "province-bj")),
    # not listed by any shared catalogue
    ("sc-c1", "bj-a1", "L0032", T + timedelta(days=1), (Status.NOT_IN_CATALOGUE, None, None)),
    # region catalogue needs region-level EQA; Hebei's hospital holds a provincial one
    ("tj-t1", "he-s1", "L0032", T + timedelta(days=1), (Status.QC_NOT_MET, "region", "region-jjj")),
    # a certificate obtained after the report does not count
    ("bj-b1", "bj-c1", "L0045", T + timedelta(days=1), (Status.QC_NOT_MET, "province", "province-bj")),
    # grade overlay: a 一级 requester accepts only 二甲 and above
    ("zj-h2", "zj-h3", "L0032", T + timedelta(days=1), (Status.OUT_OF_SCOPE, "province", "province-zj")),
    ("zj-h2", "zj-h1", "L0032", T + timedelta(days=1), (Status.RECOGNIZABLE, "province", "province-zj")),
    ("zj-h1", "zj-h3", "L0032", T + timedelta(days=1), (Status.RECOGNIZABLE, "province", "province-zj")),
])
def test_tiers_and_conditions(world, requester, issuer, item, at, expected) -> None:  # type: ignore[no-untyped-def]
    got = answer(world, requester, issuer, item, at=at)
    assert (got.status, got.tier if got.status is not Status.NOT_IN_CATALOGUE else None,
            got.catalogue_id if got.status is not Status.NOT_IN_CATALOGUE else None) == expected, got.reasons
    assert got.reasons and all(r.zh and r.en for r in got.reasons)


def test_expiry_boundary_to_the_second(world) -> None:  # type: ignore[no-untyped-def]
    edge = T + timedelta(days=60)
    on_edge = answer(world, "sc-c1", "bj-a1", "L0033", at=edge)
    assert on_edge.status is Status.RECOGNIZABLE and on_edge.valid_until == edge
    past = answer(world, "sc-c1", "bj-a1", "L0033", at=edge + timedelta(seconds=1))
    assert past.status is Status.EXPIRED and past.valid_until == edge
    assert "60" in past.reasons[0].en


def test_valid_until_is_the_latest_recognizing_window(world) -> None:  # type: ignore[no-untyped-def]
    got = answer(world, "bj-a2", "bj-a1", "L0032", at=T + timedelta(days=1))
    assert got.valid_until == T + timedelta(days=60)  # region-jjj (bj-a1 holds national EQA)
    assert set(got.via) == {"alliance-x", "city-bj", "province-bj", "region-jjj"}


def test_qc_lapsing_between_report_and_check_still_counts(world) -> None:  # type: ignore[no-untyped-def]
    reported = datetime(2026, 3, 20, 9, 0, tzinfo=CST)  # bj-b1's EQA ends 2026-03-31
    got = answer(world, "bj-a1", "bj-b1", "L0032", t=reported, at=datetime(2026, 4, 5, 9, 0, tzinfo=CST))
    assert got.status is Status.RECOGNIZABLE and got.tier == "province"
    assert got.valid_until == reported + timedelta(days=20)  # province-bj v2
    later = answer(world, "bj-a1", "bj-b1", "L0032", t=datetime(2026, 4, 2, tzinfo=CST),
                   at=datetime(2026, 4, 5, tzinfo=CST))
    assert later.status is Status.QC_NOT_MET


def test_the_catalogue_version_in_force_at_the_check_applies(world) -> None:  # type: ignore[no-untyped-def]
    reported = datetime(2025, 12, 1, 9, 0, tzinfo=CST)
    under_v1 = answer(world, "bj-b1", "bj-a1", "L0045", t=reported, at=datetime(2025, 12, 5, tzinfo=CST))
    assert (under_v1.status, under_v1.catalogue_version) == (Status.RECOGNIZABLE, "v1")
    # 2026-01-01T00:00+08:00 is v2's first instant: L0032 is then valid 20 days instead of 30, so a result
    # reported on 2025-12-01 is recognizable one second before and expired from that instant on.
    # bj-b1 holds provincial EQA only, so the province catalogue is the widest that can recognize its glucose.
    reported = datetime(2025, 12, 5, 9, 0, tzinfo=CST)
    before = answer(world, "bj-a1", "bj-b1", "L0032", t=reported, at=datetime(2025, 12, 31, 23, 59, 59, tzinfo=CST))
    assert (before.status, before.catalogue_version) == (Status.RECOGNIZABLE, "v1")
    expired = answer(world, "bj-a1", "bj-b1", "L0032", t=reported, at=datetime(2026, 1, 1, 0, 0, 0, tzinfo=CST))
    assert expired.status is Status.EXPIRED
    assert any("province-bj" in r.en and "20-day" in r.en for r in expired.reasons)


def test_out_of_scope_without_any_shared_catalogue(world) -> None:  # type: ignore[no-untyped-def]
    got = answer(world, "zj-h1", "bj-a1", "L0033", t=datetime(2025, 6, 1, tzinfo=CST),
                 at=datetime(2025, 6, 2, tzinfo=CST))  # before the national catalogue took effect
    assert got.status is Status.OUT_OF_SCOPE and got.tier is None


@pytest.mark.parametrize("status, expected", [
    ("final", Status.RECOGNIZABLE), ("amended", Status.RECOGNIZABLE), ("corrected", Status.RECOGNIZABLE),
    ("preliminary", Status.NOT_FINAL), ("cancelled", Status.NOT_FINAL), ("entered-in-error", Status.NOT_FINAL),
])
def test_only_final_amended_or_corrected_reports(world, status, expected) -> None:  # type: ignore[no-untyped-def]
    assert answer(world, "sc-c1", "bj-a1", "L0033", at=T + timedelta(days=1), status=status).status is expected


def test_unmapped_items_are_never_recognizable(world) -> None:  # type: ignore[no-untyped-def]
    got = answer(world, "bj-a2", "bj-a1", None, at=T)
    assert got.status is Status.UNMAPPED and got.item_code is None


def test_a_panel_needs_every_component_in_the_report(world) -> None:  # type: ignore[no-untyped-def]
    complete = answer(world, "bj-b1", "bj-a1", "L0264", at=T + timedelta(days=1), present=LIVER)
    assert complete.status is Status.RECOGNIZABLE and complete.tier == "province"
    partial = answer(world, "bj-b1", "bj-a1", "L0264", at=T + timedelta(days=1), present=LIVER - {"L0007"})
    assert partial.status is Status.NOT_IN_CATALOGUE and "component" in partial.reasons[0].en


INSTITUTIONS = ["bj-a1", "bj-a2", "bj-b1", "bj-c1", "tj-t1", "he-s1", "sd-q1", "zj-h1", "zj-h2", "zj-h3", "sc-c1"]
ITEMS = ["L0032", "L0033", "L0045", "L0264", "L0001", "I0001", None]
STATUSES = ["preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error"]
#: A prior and the moment of the check: requester, issuer, item, status, report time and age at the check.
PRIORS = {"requester": st.sampled_from(INSTITUTIONS), "issuer": st.sampled_from(INSTITUTIONS),
          "item": st.sampled_from(ITEMS), "status": st.sampled_from(STATUSES),
          "reported": st.datetimes(min_value=datetime(2024, 6, 1), max_value=datetime(2026, 12, 31),
                                   timezones=st.just(CST)),
          "age": st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=120))}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**PRIORS, present=st.frozensets(st.sampled_from(sorted(LIVER)), max_size=12))
def test_never_recognizable_outside_scope_window_or_status(world, requester, issuer, item, status, reported, age,
                                                           present) -> None:  # type: ignore[no-untyped-def]
    at = reported + age
    got = recognize(world, Prior(issuer, item, status, reported, present), requester, at)
    if not got.recognizable:
        return
    assert status in FINAL_STATUSES and item is not None
    assert got.valid_until is not None and at <= got.valid_until
    catalogue = next(c for c in world.catalogues_in_force(at) if c.id == got.catalogue_id)
    inst = world.institutions
    assert catalogue.covers(inst[issuer], world, world.items[item])
    assert catalogue.covers(inst[requester], world, world.items[item])
    assert catalogue.item(item) is not None and at <= reported + timedelta(days=catalogue.item(item).valid_days)
    assert set(world.items[item].components) <= present


SHARED = RecognitionMemo()  # one memo for every example below, as one API process keeps it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**PRIORS, present=st.sampled_from([frozenset(), LIVER, LIVER - {"L0007"}]))
def test_a_memo_kept_across_checks_answers_as_a_fresh_one(world, requester, issuer, item, status, reported, age,
                                                          present) -> None:  # type: ignore[no-untyped-def]
    """What the process-wide memo keeps (plans per issuer, item and status; listings) never changes an answer,
    whatever was asked before: the same prior, a panel with and without its components, other moments."""
    at = reported + age
    prior = Prior(issuer, item, status, reported, present)
    assert Recognizer(world, requester, at, SHARED)(prior) == recognize(world, prior, requester, at)


@pytest.mark.parametrize("moment", [T, datetime(2026, 3, 10, 0, 0, 0, 5, tzinfo=UTC),
                                    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3)))])
def test_expiry_stamps_are_isoformat(moment: datetime) -> None:
    assert _stamp(moment) == moment.isoformat()


def test_a_listing_failing_whatever_the_date_is_answered_in_the_plan(world) -> None:  # type: ignore[no-untyped-def]
    # Hebei's hospital holds no region-level EQA certificate: the region catalogue fails it at any date.
    recognizer = Recognizer(world, "tj-t1", T + timedelta(days=1))
    listing = recognizer.listing(world.institutions["he-s1"], world.items["L0032"], True)
    assert listing and all(listed.fails is not None for listed in listing)
    assert recognizer.answer("he-s1", "L0032", "final", T) == _failing("L0032", listing) == _judge(
        recognizer, listing, "L0032", T)
    # The same catalogue with QC waived and its grade condition unmet, alone and after the QC failure.
    grade = replace(listing[0], qc_windows=None, grade_ok=False)
    for mixed in ([grade], [listing[0], grade], [grade, listing[0]]):
        assert _failing("L0032", mixed) == _judge(recognizer, mixed, "L0032", T)
    assert _failing("L0032", [grade]).status is Status.OUT_OF_SCOPE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**PRIORS, present=st.sampled_from([frozenset(), LIVER, LIVER - {"L0007"}]))
def test_every_answer_is_what_the_full_rules_say(world, requester, issuer, item, status, reported, age,
                                                 present) -> None:  # type: ignore[no-untyped-def]
    """The shortcuts (a plan's date-independent answer; a result's shared expiries) never change an answer:
    it is what judging every listing in full says."""
    at = reported + age
    recognizer = Recognizer(world, requester, at)
    got = recognizer.answer(issuer, item, status, reported, present)
    if item is None or status not in FINAL_STATUSES:
        return
    listing = recognizer.listing(world.institutions[issuer], world.items[item],
                                 set(world.items[item].components) <= present)
    if listing:  # otherwise nothing is judged: no shared catalogue lists it
        assert got == _judge(Recognizer(world, requester, at), listing, item, reported)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requester=PRIORS["requester"], reported=PRIORS["reported"], age=PRIORS["age"],
       earlier=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
       priors=st.lists(st.tuples(PRIORS["issuer"], PRIORS["item"], PRIORS["status"], st.booleans()), min_size=1,
                       max_size=10))
def test_one_recognizer_answers_many_results_as_fresh_ones(world, requester, reported, age, earlier,
                                                           priors) -> None:  # type: ignore[no-untyped-def]
    """A check asks one recognizer about every item of every result, a result's items in a row (the same report
    time): what it shares between them never changes an answer."""
    at = reported + age
    recognizer = Recognizer(world, requester, at)
    other = reported - earlier
    for issuer, item, status, second in priors:
        prior = Prior(issuer, item, status, other if second else reported)
        assert recognizer(prior) == recognize(world, prior, requester, at)


@pytest.mark.parametrize("items", [("L0032", "L0045"), ("L0045", "L0032")])
def test_a_results_items_keep_their_own_windows_under_one_catalogue(world, items) -> None:  # type: ignore[no-untyped-def]
    """province-bj (v2) lists L0032 for 20 days and L0045 for 7: ten days on, the same report is recognizable
    under it for L0032 and only under region-jjj (60 days) for L0045, in whichever order they are asked."""
    at = T + timedelta(days=10)
    recognizer = Recognizer(world, "bj-b1", at)
    got = {item: recognizer(Prior("bj-a1", item, "final", T)) for item in items}
    assert got == {item: recognize(world, Prior("bj-a1", item, "final", T), "bj-b1", at) for item in items}
    assert (got["L0032"].via, got["L0045"].via) == (("province-bj", "region-jjj"), ("region-jjj",))
