"""The network doors' allow-list file (adapters/doors.py): what binds a caller to an institution, and the
errors, each naming file:line, that keep a listener from starting."""
from __future__ import annotations

import ipaddress
import logging

import pytest
from click.testing import CliRunner

from adapters.doors import AllowListError, announce, load_allow_list, peer_address
from adapters.hl7 import Hl7Door
from adapters.hl7.header import parse_header
from tests.adapters.hl7.hl7data import CHAOYANG
from tests.fixtures.pseudonyms import TEST_KEY

EXAMPLE = """
# comments are fine
hl7:
  - source: 10.20.1.0/24
    institution: bj-chaoyang-001
    facilities: [BJCY001, "2.16.156.10011.1.9"]
  - source: "fd00::/8"
    institution: hb-wuhan-001
    facilities: WH001
dicom:
  - ae_title: CY_CT01
    source: 10.20.3.15
    institution: bj-chaoyang-001
  - ae_title: WH_MR
    institution: hb-wuhan-001
"""


def test_the_example_file_parses(book, allow_file) -> None:  # type: ignore[no-untyped-def]
    allow = load_allow_list(allow_file(EXAMPLE), book.institutions)
    cy, wh = allow.hl7
    assert cy.source == ipaddress.ip_network("10.20.1.0/24") and cy.line == 4
    assert cy.facilities == {"BJCY001", "2.16.156.10011.1.9", "bj-chaoyang-001"}
    assert wh.facilities == {"WH001", "hb-wuhan-001"}
    assert [c.ae_title for c in allow.dicom_callers("bj-chaoyang-001")] == ["CY_CT01"]
    assert allow.dicom[1].source is None
    assert allow.hl7_senders("sh-xuhui-001") == ()


def test_the_shipped_example_parses(book) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    example = Path(__file__).parents[2] / "docs" / "doors.example.yaml"
    allow = load_allow_list(example, book.institutions)
    assert allow.hl7 and allow.dicom


@pytest.mark.parametrize(("text", "line", "message"), [
    ("hl7:\n  - source: 10.0.0.0/8\n    institution: no-such-hospital\n", 3, "unknown institution 'no-such-hospital'"),
    ("hl7:\n  - source: 10.0.0.1/8\n    institution: bj-chaoyang-001\n", 2, "not an IP address or network"),
    ("hl7:\n  - source: 10.0.0.300\n    institution: bj-chaoyang-001\n", 2, "not an IP address or network"),
    ("hl7:\n  - institution: bj-chaoyang-001\n", 2, "hl7 entry without 'source'"),
    ("hl7:\n  - source: 10.0.0.0/8\n    institution: bj-chaoyang-001\n    ae_title: X\n", 4, "unknown key 'ae_title'"),
    ("hl7:\n  - source: 10.0.0.0/8\n    institution: bj-chaoyang-001\n    facilities: [1]\n", 4, "facilities"),
    ("mllp:\n  - source: 10.0.0.0/8\n", 1, "unknown door 'mllp'"),
    ("dicom:\n  - ae_title: CT1\n    institution: bj-chaoyang-001\n  - ae_title: CT1\n    institution: hb-wuhan-001\n",
     4, "AE title 'CT1' is bound to bj-chaoyang-001 at line 2"),
    ("hl7: [\n", 2, "YAML syntax error"),
])
def test_an_unusable_file_is_refused_naming_file_and_line(book, allow_file, text, line, message) -> None:  # type: ignore[no-untyped-def]
    path = allow_file(text)
    with pytest.raises(AllowListError) as caught:
        load_allow_list(path, book.institutions)
    assert f"{path}:{line}: " in str(caught.value) and message in str(caught.value)


def test_every_problem_is_reported_at_once(book, allow_file) -> None:  # type: ignore[no-untyped-def]
    path = allow_file("hl7:\n  - source: nowhere\n    institution: nobody\n")
    with pytest.raises(AllowListError) as caught:
        load_allow_list(path, book.institutions)
    assert str(caught.value).splitlines() == [
        f"{path}:3: unknown institution 'nobody': not in the code book's institution registry "
        "(codes/data/institutions.yaml)",
        f"{path}:2: source 'nowhere' is not an IP address or network (CIDR): 'nowhere' does not appear to be an "
        "IPv4 or IPv6 network"]


def test_peer_addresses_match_as_the_socket_reports_them() -> None:
    assert peer_address("::ffff:127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert peer_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert peer_address("localhost") is None


def test_the_hl7_door_binds_addresses_to_facilities(book, allow_file) -> None:  # type: ignore[no-untyped-def]
    from adapters.hl7 import Hl7Error

    door = Hl7Door("bj-chaoyang-001", load_allow_list(allow_file(EXAMPLE), book.institutions))
    header = parse_header(CHAOYANG.decode())[1]  # MSH-4 BJCY001
    assert door.admits("10.20.1.7") and door.admits("::ffff:10.20.1.7")
    assert not door.admits("10.20.2.7") and not door.admits("fd00::1")  # fd00::/8 is Wuhan's
    door.check(header, "10.20.1.7")
    with pytest.raises(Hl7Error) as refused:
        door.check(header, "10.20.2.7")
    assert refused.value.reject and refused.value.location == "MSH^1^4"
    assert Hl7Door("bj-chaoyang-001", None).admits("203.0.113.9")  # no allow-list: open


def test_an_open_door_is_announced_with_a_warning(caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.INFO, logger="adapters.doors"):
        announce("hl7", "bj-chaoyang-001", None, 0)
        announce("hl7", "bj-chaoyang-001", "allow-list x.yaml", 0)
        announce("hl7", "bj-chaoyang-001", "allow-list x.yaml", 2)
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == logging.WARNING and "is OPEN" in levels[0][1] and "production" in levels[0][1]
    assert levels[1][0] == logging.WARNING and "every caller will be refused" in levels[1][1]
    assert levels[2][0] == logging.INFO


def test_the_listener_commands_refuse_a_bad_allow_list_before_starting(allow_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from exchange.cli import main

    bad = allow_file("dicom:\n  - ae_title: CT1\n    institution: nowhere-001\n")
    env = {"HRX_KAFKA_BOOTSTRAP": "127.0.0.1:9", "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_VAR_DIR": str(tmp_path / "var"), "HRX_DOOR_ALLOW": str(bad)}
    for command in (["hl7", "--listen", "127.0.0.1:0"], ["dicom-scp", "--spool", str(tmp_path / "spool")]):
        result = CliRunner().invoke(main, ["adapter", *command, "--institution", "bj-chaoyang-001"], env=env)
        assert result.exit_code == 2, result.output
        assert f"{bad}:3: unknown institution 'nowhere-001'" in result.output
    result = CliRunner().invoke(main, ["adapter", "hl7", "--listen", "127.0.0.1:0", "--institution",
                                       "bj-chaoyang-001", "--tls-key", str(bad)], env={**env, "HRX_DOOR_ALLOW": ""})
    assert result.exit_code == 2 and "--tls-key and --tls-ca need --tls-cert" in result.output
