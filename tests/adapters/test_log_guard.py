"""The log guard on the handlers: our records scrubbed, anyone else's reduced to their template, by any name."""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from adapters.log_guard import WITHHELD, PatientDataFilter, install_log_guard
from schemas.resident_id import PLACEHOLDER, make_resident_id

RID = make_resident_id("32010219800101123")
RID_X = make_resident_id("11010519491231002")  # ends in X


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What a guarded root handler writes (the handler is removed afterwards)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    install_log_guard()
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_third_party_logger_writes_its_template_only(written) -> None:  # type: ignore[no-untyped-def]
    # python-hl7 names its loggers after its files; any name outside the project is third-party
    hl7_like = logging.getLogger("/usr/lib/python3/dist-packages/hl7/util.py")
    hl7_like.warning("Error unescaping value [%s], empty sequence found at %d", f"PID|||{RID}^^^^NNCHN", 12)
    logging.getLogger("pynetdicom.dsutils").warning("dataset: %(dump)s", {"dump": "(0010,0020) LO [Zhang San]"})
    logging.getLogger("somelib").warning(f"patient {RID_X} not found")  # pre-formatted by the library
    lines = written.getvalue().splitlines()
    assert lines == [
        "/usr/lib/python3/dist-packages/hl7/util.py: Error unescaping value [%s], empty sequence found at %d"
        + WITHHELD,
        "pynetdicom.dsutils: dataset: %(dump)s" + WITHHELD,
        f"somelib: patient {PLACEHOLDER} not found",
    ]


def test_our_loggers_write_the_message_scrubbed(written) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger("adapters.dicom.scp").warning("C-STORE from %s refused: patient %s", "CT1@10.0.0.7", RID)
    logging.getLogger("hrx.engine").info(f"id {RID_X}NNCHN in message")  # an ID followed by letters
    logging.getLogger("exchange.engine").info("stats %s", {"n": 3})
    assert written.getvalue().splitlines() == [
        f"adapters.dicom.scp: C-STORE from CT1@10.0.0.7 refused: patient {PLACEHOLDER}",
        f"hrx.engine: id {PLACEHOLDER}NNCHN in message",
        "exchange.engine: stats {'n': 3}",
    ]


def test_tracebacks_and_bad_arguments_are_handled(written) -> None:  # type: ignore[no-untyped-def]
    log = logging.getLogger("adapters.csv_export")
    try:
        raise ValueError(f"bad row {RID}")
    except ValueError:
        log.exception("row refused")
    log.error("two placeholders %s %s", "one")  # a broken call must neither raise nor leak
    logging.getLogger("thirdparty").info("ok", stack_info=True)
    text = written.getvalue()
    assert RID not in text and f"ValueError: bad row {PLACEHOLDER}" in text
    assert "adapters.csv_export: two placeholders %s %s (arguments could not be formatted)" in text


def test_the_guard_is_idempotent_and_installed_once_per_handler(written) -> None:  # type: ignore[no-untyped-def]
    again = install_log_guard()
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
                 and getattr(h, "stream", None) is written]
    assert [f for f in handler.filters if isinstance(f, PatientDataFilter)] == [again]
    record = logging.LogRecord("somelib", logging.INFO, __file__, 1, "value %s", (RID,), None)
    assert again.filter(record) and again.filter(record)
    assert record.getMessage() == "value %s" + WITHHELD


def test_the_cli_installs_the_guard_on_the_root_handlers(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from exchange.cli import _logging

    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])  # basicConfig leaves configured handlers as they are
    for logger in (root, logging.getLogger("kafka"), logging.getLogger("alembic")):
        monkeypatch.setattr(logger, "level", logger.level)
    _logging(False)
    assert any(isinstance(f, PatientDataFilter) for f in handler.filters)
