"""Retention of the DICOM spool (adapters/dicom/spool.py, ``purge_published``): a study's instances go once it
was published and left unchanged for the grace period; a study waiting to be (re)published, or published
recently, stays; a dry run removes nothing; a second run removes nothing more."""
from __future__ import annotations

import time
from pathlib import Path

import pydicom

from adapters.dicom.metadata import decode, instance_record
from adapters.dicom.spool import Spool, StudyAssembler, purge_published
from adapters.pipeline import ResultPipeline
from tests.adapters.dicom import dicomdata as dd
from tests.fakes import FakePublisher

INSTITUTION = "bj-chaoyang-001"
DAY = 86400.0


def _spool_study(spool: Spool, directory: Path, pseudonymizer, now: float) -> str:  # type: ignore[no-untyped-def]
    study = dd.ct_study(directory, slices=2, with_report=False)
    for path in study.files:
        body = dd._body_offset(path)
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        assert spool.add(instance_record(decode(path.read_bytes()[body:], syntax), pseudonymizer), now=now)
    return study.uid


def test_published_studies_go_after_the_grace_period_waiting_ones_stay(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path / "spool")
    publisher = FakePublisher()
    assembler = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, publisher), INSTITUTION,  # type: ignore[arg-type]
                               stable_seconds=0)
    now = time.time()
    try:
        published = _spool_study(spool, tmp_path / "a", pseudonymizer, now)
        assert assembler.assemble_once(now + 1) == 1 and len(publisher.records) == 1
        waiting = _spool_study(spool, tmp_path / "b", pseudonymizer, now)  # received, never published
        assert spool.counts()["instances"] == 4

        # not yet past the grace period
        assert purge_published(spool.directory, 30, now=now + 29 * DAY, dry_run=False).instances == 0
        dry = purge_published(spool.directory, 30, now=now + 31 * DAY, dry_run=True)
        assert (dry.studies, dry.instances) == (1, 2) and spool.counts()["instances"] == 4
        examined: list[int] = []
        done = purge_published(spool.directory, 30, now=now + 31 * DAY, dry_run=False, progress=examined.append)
        assert (done.studies, done.instances) == (1, 2) and examined == [1]
        assert spool.study(published) is None and spool.study(waiting) is not None
        assert spool.counts()["instances"] == 2  # the waiting study's, beside the running spool's connection
        assert purge_published(spool.directory, 30, now=now + 31 * DAY, dry_run=False).instances == 0
        # the spool owner goes on working after the purge
        assert assembler.assemble_once(now + 2) == 1 and len(publisher.records) == 2
    finally:
        spool.close()


def test_a_study_changed_after_publication_is_kept_until_republished(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    spool = Spool(tmp_path / "spool")
    assembler = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, FakePublisher()), INSTITUTION,  # type: ignore[arg-type]
                               stable_seconds=0)
    now = time.time()
    try:
        uid = _spool_study(spool, tmp_path / "a", pseudonymizer, now)
        assert assembler.assemble_once(now + 1) == 1
        later = dd.ct_study(tmp_path / "late", slices=1, with_report=False)
        ds = pydicom.dcmread(later.files[0])
        ds.StudyInstanceUID = uid
        record = instance_record(ds, pseudonymizer)
        assert spool.add(record, now=now + 2)  # dirty again: version 2 pending
        assert purge_published(spool.directory, 30, now=now + 60 * DAY, dry_run=False).instances == 0
        assert spool.study(uid)["dirty"] == 1
    finally:
        spool.close()


def test_a_missing_spool_is_nothing_to_purge(tmp_path: Path) -> None:
    assert purge_published(tmp_path / "none", 30, dry_run=False).instances == 0
