"""The tier plugin (tests/fixtures/tiers.py), run on a small planted suite."""
from __future__ import annotations

import pytest

PLANTED = '''
import socket
import subprocess

import pytest


@pytest.fixture
def database():
    return "a stand-in with the name of an integration fixture"


@pytest.fixture
def through_database(database):
    return database


def test_pure():
    assert 1 + 1 == 2


def test_uses_database(database):
    pass


def test_uses_it_through_another_fixture(through_database):
    pass


@pytest.mark.integration
def test_marked():
    pass


def test_binds_a_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))


def test_swallows_the_refusal_of_a_process():
    try:
        subprocess.run(["true"], check=False)
    except OSError:
        pass
'''


@pytest.fixture
def planted(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n")
    pytester.makepyfile(test_planted=PLANTED)
    return pytester


def test_integration_fixtures_and_markers_make_a_test_integration(planted: pytest.Pytester) -> None:
    result = planted.runpytest("-p", "tests.fixtures.tiers", "-m", "integration", "--collect-only", "-q")
    assert sorted(line.split("::")[1] for line in result.outlines if "::" in line) == [
        "test_marked", "test_uses_database", "test_uses_it_through_another_fixture"]


def test_a_unit_test_that_leaves_its_process_fails_even_if_it_swallows_the_refusal(planted: pytest.Pytester) -> None:
    result = planted.runpytest("-p", "tests.fixtures.tiers", "-m", "unit")
    result.assert_outcomes(passed=2, failed=1, errors=2, deselected=3)  # the swallowing test passes, then errors
    result.stdout.fnmatch_lines([
        "*test_binds_a_socket is in the unit tier but tried to bind a socket*",
        "*test_swallows_the_refusal_of_a_process is in the unit tier but tried to start a process*",
    ])
