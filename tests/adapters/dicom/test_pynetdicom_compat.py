"""The fenced pynetdicom tuning: in force on the release it was written for, standing down on any other."""
from __future__ import annotations

import copy
import logging
import time

import pytest
from pynetdicom import AE, _config, evt
from pynetdicom import association as association_module
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from adapters.dicom import pynetdicom_compat as compat
from adapters.dicom.pynetdicom_compat import DUL_LOOP_DELAY, SharedUidContext, _ReactorClock
from adapters.dicom.scp import NoDelayAssociationServer
from adapters.pipeline import ResultPipeline
from tests.fixtures.waiting import wait_for

from . import dicomdata as dd
from tests.fakes import FakePublisher

from .peers import storescu

#: The events pynetdicom's standard logging handlers are bound to (pynetdicom._config.LOG_HANDLER_LEVEL).
_LOGGED_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT)


@pytest.fixture
def another_release(monkeypatch):  # type: ignore[no-untyped-def]
    """A pynetdicom release the tuning was not written for; the process's reactor clock put aside meanwhile."""
    monkeypatch.setattr(compat, "installed_release", lambda: "3.1.0")
    monkeypatch.setattr(compat, "_stood_down", set())
    monkeypatch.setattr(association_module, "time", time)
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", _config.LOG_HANDLER_LEVEL)


@pytest.mark.parametrize(("version", "applies"), [
    ("3.0.4", True), ("3.0.0", True), ("3.0.12rc1", True),
    ("3.1.0", False), ("2.0.2", False), ("4.0", False), (None, False), ("", False),
])
def test_the_tuning_applies_only_to_the_minor_release_it_was_written_for(  # type: ignore[no-untyped-def]
        monkeypatch, version, applies) -> None:
    monkeypatch.setattr(compat, "installed_release", lambda: version)
    monkeypatch.setattr(compat, "_stood_down", set())
    assert compat.tuning_applies() is applies


def test_the_installed_pynetdicom_is_the_release_the_tuning_was_written_for() -> None:
    # pyproject.toml pins it; a test run on another release would silently measure the stock server
    assert compat.tuning_applies(), compat.installed_release()


def test_associations_run_with_the_tuned_pynetdicom_settings(  # type: ignore[no-untyped-def]
        tmp_path, book, pseudonymizer, start_receiver) -> None:
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()))
    server = receiver._server
    assert isinstance(server, NoDelayAssociationServer)
    assert server in receiver.ae._servers  # registered with its AE, as AE.start_server registers its own
    # contexts are copied per association without re-validating their UIDs: equal, yet independent lists
    assert all(isinstance(cx, SharedUidContext) for cx in server.contexts)
    copied = copy.deepcopy(server.contexts)
    assert [vars(c) for c in copied] == [vars(c) for c in server.contexts]
    assert copied[0].transfer_syntax is not server.contexts[0].transfer_syntax
    ae = AE(ae_title="TUNING")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="HRX")
    assert assoc.is_established
    try:
        [acceptor] = wait_for(lambda: server.active_associations)
        assert acceptor.dul._run_loop_delay == DUL_LOOP_DELAY
        assert isinstance(association_module.time, _ReactorClock)
        for target in (server, acceptor):  # pynetdicom's standard logging handlers are not bound
            for event in _LOGGED_EVENTS:
                assert target.get_handlers(event) == []
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_on_another_release_the_tuning_stands_down_and_the_scp_still_stores(  # type: ignore[no-untyped-def]
        tmp_path, dcmtk, book, pseudonymizer, start_receiver, another_release, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), stable_seconds=60)
        second = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), stable_seconds=60)
    stood_down = [r for r in caplog.records if r.name == compat.__name__]
    assert len(stood_down) == 1 and "3.1.0" in stood_down[0].getMessage()  # one warning per process
    server = receiver._server
    # pynetdicom's stock server, started by AE.start_server: none of the private names are touched
    assert type(server) is ThreadedAssociationServer and server in receiver.ae._servers
    assert not any(isinstance(cx, SharedUidContext) for cx in server.contexts)
    assert association_module.time is time and compat.install_reactor_clock() is False
    assert association_module.time is time
    ct = dd.ct_study(tmp_path / "ct", slices=2)
    code, responses, out = storescu(receiver.port, ct.files)
    assert code == 0 and responses == ["Success"] * 3, out
    assert receiver.handler.stats.stored == 3 and receiver.spool.counts()["instances"] == 3
    ae = AE(ae_title="STOCK")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", second.port, ae_title="HRX")
    assert assoc.is_established
    try:
        [acceptor] = wait_for(lambda: second._server.active_associations)
        assert acceptor.dul._run_loop_delay == 0.001  # pynetdicom's own
        for event in _LOGGED_EVENTS:  # the documented logging switch is not part of the fence
            assert second._server.get_handlers(event) == [] and acceptor.get_handlers(event) == []
    finally:
        assoc.release()
    second.stop()
    assert second._server is None and second.ae._servers == []


class _ReactorProbe(Association):
    """An acceptor whose thread, instead of pynetdicom's reactor, takes the reactor's sleep once."""

    def run(self) -> None:
        association_module.time.sleep(compat.REACTOR_SLEEP)


def test_the_association_reactor_wakes_for_a_dimse_message_instead_of_sleeping(  # type: ignore[no-untyped-def]
        monkeypatch) -> None:
    assert compat.install_reactor_clock()
    assert compat.install_reactor_clock()  # idempotent: the clock does not wrap itself
    clock = association_module.time
    assert isinstance(clock, _ReactorClock) and clock.monotonic() <= time.monotonic()
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setattr(compat, "REACTOR_SLEEP", 120.0)  # long enough that a missed wake-up fails the test
    ae = AE()
    waiting = _ReactorProbe(ae, "acceptor")
    waiting.start()
    wait_for(lambda: waiting.dimse.msg_queue.not_empty._waiters)  # the reactor waits on its DIMSE queue ...
    waiting.dimse.msg_queue.put((1, "C-STORE-RQ"))
    waiting.join(30)
    assert not waiting.is_alive()  # ... and wakes for the message,
    assert waiting.dimse.msg_queue.get_nowait() == (1, "C-STORE-RQ")  # which it leaves for the reactor to serve
    queued = _ReactorProbe(ae, "acceptor")
    queued.dimse.msg_queue.put((1, "C-ECHO-RQ"))
    queued.start()
    queued.join(30)
    assert not queued.is_alive() and queued.dimse.msg_queue.qsize() == 1  # a queued message: no wait at all
    assert slept == []
    clock.sleep(120.0)  # not in an acceptor's thread, or another duration: the time module's own sleep
    clock.sleep(0.5)
    assert slept == [120.0, 0.5]
