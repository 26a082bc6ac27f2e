"""Association admission against real peers: a host holding its associations idle or flooding the SCP does not
lock out a modality (per calling AE title and per source address limits, A-ASSOCIATE-RJ local limit exceeded),
idle associations and silent connections are closed, and ``hrx adapter dicom-scp`` exposes the settings."""
from __future__ import annotations

import socket
import time

import pytest
from click.testing import CliRunner
from pynetdicom import AE
from pynetdicom.association import Association

from adapters.dicom.admission import CallerLimits
from adapters.dicom.scp import DicomReceiver, ScpConfig
from adapters.dicom.spool import Spool
from adapters.pipeline import ResultPipeline
from tests.fakes import FakePublisher
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

from . import dicomdata as dd
from .peers import INSTITUTION, echoscu, storescu

pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter")

VERIFICATION = "1.2.840.10008.1.1"
#: Where the misbehaving host connects from; the modality (dcmtk) connects from 127.0.0.1.
HOG_ADDRESS = "127.0.0.2"


def _hold(port: int, titles: list[str], address: str = HOG_ADDRESS) -> list[Association]:
    """Open one association per calling AE title from ``address`` and keep them open, idle (never released)."""
    held = []
    for title in titles:
        ae = AE(ae_title=title)
        ae.add_requested_context(VERIFICATION)
        held.append(ae.associate("127.0.0.1", port, ae_title="HRX", bind_address=(address, 0)))
    return held


def _rejection(assoc: Association) -> tuple[int, int, int] | None:
    """(result, source, reason) of the A-ASSOCIATE-RJ the association got, or None."""
    if not assoc.is_rejected:
        return None
    answer = assoc.acceptor.primitive
    return answer.result, answer.result_source, answer.diagnostic


def _release(held: list[Association]) -> None:
    for assoc in held:
        if assoc.is_established:
            assoc.release()


@pytest.mark.parametrize("titles", [["HOG"] * 8, [f"HOG{i}" for i in range(8)]], ids=["one-title", "one-address"])
def test_a_host_taking_every_slot_leaves_the_modality_its_own(tmp_path, dcmtk, book, pseudonymizer,  # type: ignore[no-untyped-def]
                                                               start_receiver, titles) -> None:
    """With the defaults (8 associations, 4 per calling AE title, 4 per address) a host opening 8 associations
    and sitting on them gets 4; the other 4 requests are rejected transient, presentation-related, local
    limit exceeded (PS3.8 Table 9-21: 2, 3, 2); a modality then stores a study."""
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()))
    held = _hold(receiver.port, titles)
    try:
        assert [a.is_established for a in held] == [True] * 4 + [False] * 4
        assert [_rejection(a) for a in held[4:]] == [(2, 3, 2)] * 4
        code, responses, out = storescu(receiver.port, dd.ct_study(tmp_path / "ct", slices=2).files,
                                        calling="MODALITY")
        assert code == 0 and responses == ["Success"] * 3, out
        assert all(a.is_established for a in held[:4])  # the hog's own associations were left alone
        assert receiver.limits.rejected == 4
    finally:
        _release(held)


def test_dcmtk_sees_the_local_limit_exceeded_rejection(dcmtk, book, pseudonymizer, start_receiver) -> None:  # type: ignore[no-untyped-def]
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), max_associations_per_ae=1)
    held = _hold(receiver.port, ["ECHOSCU"], address="127.0.0.1")
    try:
        code, out = echoscu(receiver.port, calling="ECHOSCU")
        assert code != 0 and "Association Rejected" in out, out
        assert "Result: Rejected Transient, Source: Service Provider (Presentation Related)" in out, out
        assert "Reason: Local Limit Exceeded" in out, out
        assert echoscu(receiver.port, calling="OTHER")[0] == 0
    finally:
        _release(held)
    wait_for(lambda: receiver.limits.held() == {})
    assert echoscu(receiver.port, calling="ECHOSCU")[0] == 0  # a released slot is free again


def test_an_idle_association_is_aborted_after_the_network_timeout(book, pseudonymizer, start_receiver) -> None:  # type: ignore[no-untyped-def]
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), network_timeout=1.0,
                              max_associations_per_ae=1)
    [idle] = _hold(receiver.port, ["IDLER"])
    assert idle.is_established
    started = time.monotonic()
    wait_for(lambda: idle.is_aborted, timeout=10)
    assert 0.9 <= time.monotonic() - started < 8
    wait_for(lambda: receiver.limits.held() == {})
    [again] = _hold(receiver.port, ["IDLER"])  # its slot is free again
    assert again.is_established
    again.release()


def test_a_connection_that_never_asks_for_an_association_is_closed_after_the_acse_timeout(  # type: ignore[no-untyped-def]
        book, pseudonymizer, start_receiver) -> None:
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), acse_timeout=1.0)
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=15) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the SCP, nothing sent
        assert 0.9 <= time.monotonic() - started < 10
    assert (receiver.ae.acse_timeout, receiver.ae.dimse_timeout) == (1.0, 60.0)


def test_limits_must_leave_room_and_timeouts_must_be_bounded(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at least 1"):
        CallerLimits(0, 4)
    spool = Spool(tmp_path / "spool")
    try:
        for bad in ({"network_timeout": 0}, {"acse_timeout": -1}, {"dimse_timeout": 0}):
            with pytest.raises(ValueError, match="timeouts must be positive"):
                DicomReceiver(ScpConfig(**bad), spool, ResultPipeline(book, pseudonymizer), INSTITUTION)
    finally:
        spool.close()


def test_the_command_passes_its_limits_and_timeouts_to_the_scp(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from adapters.dicom import scp
    from exchange.cli import main

    seen: list[ScpConfig] = []

    class Stop(Exception):
        pass

    def receiver(config, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(config)
        raise Stop

    monkeypatch.setattr(scp, "DicomReceiver", receiver)
    env = {"HRX_KAFKA_BOOTSTRAP": "127.0.0.1:9", "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_VAR_DIR": str(tmp_path / "var")}
    args = ["adapter", "dicom-scp", "--institution", "bj-xicheng-001", "--spool", str(tmp_path / "spool")]
    result = CliRunner().invoke(main, [*args, "--max-associations-per-ae", "2", "--max-associations-per-address",
                                       "3", "--network-timeout", "15", "--acse-timeout", "5",
                                       "--dimse-timeout", "20"], env=env)
    assert isinstance(result.exception, Stop), result.output
    config = seen[-1]
    assert (config.max_associations_per_ae, config.max_associations_per_address) == (2, 3)
    assert (config.network_timeout, config.acse_timeout, config.dimse_timeout) == (15, 5, 20)
    CliRunner().invoke(main, args, env=env)
    fields = ("max_associations", "max_associations_per_ae", "max_associations_per_address", "network_timeout",
              "acse_timeout", "dimse_timeout")
    defaults = [getattr(seen[-1], name) for name in fields]
    assert defaults == [getattr(ScpConfig(), name) for name in fields] == [8, 4, 4, 60, 30, 60]
