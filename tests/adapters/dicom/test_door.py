"""The storage SCP as a network door (docs/rules.md, "Network doors"): calling AE titles bound to the SCP's
institution, from the addresses their entries name, associate; any other is rejected (calling AE title not
recognized); DICOM over TLS, and mutual TLS, through pynetdicom's ``ssl_context`` / ``tls_args``."""
from __future__ import annotations

import logging
import socket
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adapters.doors import AllowList, load_allow_list
from adapters.pipeline import ResultPipeline
from adapters.tls import client_context, server_context
from tests.fakes import FakePublisher

from . import dicomdata as dd
from .peers import INSTITUTION

CALLERS = f"""
dicom:
  - ae_title: MODALITY1
    source: 127.0.0.1
    institution: {INSTITUTION}
  - ae_title: FAR_AWAY
    source: 10.0.0.0/8
    institution: {INSTITUTION}
  - ae_title: OTHER_HOSP
    institution: bj-chaoyang-001
"""


def _allow(book, allow_file) -> AllowList:  # type: ignore[no-untyped-def]
    return load_allow_list(allow_file(CALLERS), book.institutions)


def _associate(port: int, calling: str, tls_args=None, files: tuple[Path, ...] = ()):  # type: ignore[no-untyped-def]
    """Associate as ``calling``; (association, statuses of C-ECHO then a C-STORE per file) when established."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="HRX", tls_args=tls_args)
    statuses = []
    if assoc.is_established:
        statuses.append(int(assoc.send_c_echo().Status))
        statuses += [int(assoc.send_c_store(ds).Status) for ds in datasets]
        assoc.release()
    return assoc, statuses


def _rejection(assoc) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    rj = assoc.acceptor.primitive
    return rj.result, rj.result_source, rj.diagnostic


def test_only_callers_bound_to_the_institution_associate(book, pseudonymizer, start_receiver, allow_file,  # type: ignore[no-untyped-def]
                                                         tmp_path, caplog) -> None:
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), allow=_allow(book, allow_file),
                              stable_seconds=3600)
    study = dd.ct_study(tmp_path / "ct", slices=1, with_report=False)
    assoc, statuses = _associate(receiver.port, "MODALITY1", files=tuple(study.files))
    assert statuses == [0, 0]
    [record] = receiver.spool.records(study.uid)
    assert record.calling_ae == "MODALITY1"
    assert receiver.assembler.institution == INSTITUTION  # the issuer of what MODALITY1 stored
    with caplog.at_level(logging.WARNING, logger="adapters.dicom.admission"):
        for calling in ("INTRUDER", "FAR_AWAY", "OTHER_HOSP"):  # unlisted; wrong address; another institution
            assoc, statuses = _associate(receiver.port, calling, files=tuple(study.files))
            assert assoc.is_rejected and statuses == []
            assert _rejection(assoc) == (1, 1, 3)  # permanent, service user, calling AE title not recognized
    assert receiver.door.rejected == 3
    assert any("FAR_AWAY" in r.getMessage() and "address 127.0.0.1" in r.getMessage() for r in caplog.records)
    assert receiver.spool.counts()["instances"] == 1


def test_allow_ae_titles_are_bound_to_the_institution_from_any_address(book, pseudonymizer, start_receiver,  # type: ignore[no-untyped-def]
                                                                      allow_file) -> None:
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), allow=_allow(book, allow_file),
                              allow_ae=("FAR_AWAY",))
    assert _associate(receiver.port, "FAR_AWAY")[1] == [0]
    assert _associate(receiver.port, "INTRUDER")[0].is_rejected


def test_without_an_allow_list_the_door_is_open_and_says_so(book, pseudonymizer, start_receiver, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.WARNING, logger="adapters.doors"):
        receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()))
    assert any("is OPEN" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert _associate(receiver.port, "ANYONE")[1] == [0]


def test_dicom_over_tls(book, pseudonymizer, start_receiver, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), stable_seconds=3600,
                              ssl_context=server_context(tls_files.server_cert, tls_files.server_key))
    study = dd.ct_study(tmp_path / "ct", slices=1, with_report=False)
    assoc, _ = _associate(receiver.port, "MODALITY1")  # plain text at a TLS door: never associates
    assert not assoc.is_established
    # a peer that connects and never starts its handshake holds its own thread, not the accept loop
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10):
        tls_args = (client_context(tls_files.ca), "localhost")
        assert _associate(receiver.port, "MODALITY1", tls_args, tuple(study.files))[1] == [0, 0]
    assert receiver.spool.counts()["instances"] == 1


def test_dicom_mutual_tls_refuses_a_client_without_a_certificate(book, pseudonymizer, start_receiver,  # type: ignore[no-untyped-def]
                                                                 tls_files) -> None:
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()),
                              ssl_context=server_context(tls_files.server_cert, tls_files.server_key, tls_files.ca))
    assoc, _ = _associate(receiver.port, "MODALITY1", (client_context(tls_files.ca), "localhost"))
    assert not assoc.is_established
    with_cert = client_context(tls_files.ca, tls_files.client_cert, tls_files.client_key)
    assert _associate(receiver.port, "MODALITY1", (with_cert, "localhost"))[1] == [0]


@pytest.mark.parametrize("ae_title", ["", "A" * 17, "BACK\\SLASH", "模态"])
def test_a_bad_ae_title_is_refused_at_load(book, allow_file, ae_title) -> None:  # type: ignore[no-untyped-def]
    from adapters.doors import AllowListError

    path = allow_file(f"dicom:\n  - ae_title: '{ae_title}'\n    institution: {INSTITUTION}\n")
    with pytest.raises(AllowListError, match=f"{path}:2: AE title"):
        load_allow_list(path, book.institutions)
