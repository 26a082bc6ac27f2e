"""Registers the suite's fixture plugin (tests/fixtures/); fixtures live there, never here."""

pytest_plugins = [
    "tests.fixtures.stores",
    "tests.fixtures.broker",
    "tests.fixtures.codebook",
    "tests.fixtures.pseudonyms",
    "tests.fixtures.principals",
    "tests.fixtures.doors",
    "tests.fixtures.tiers",
    "tests.fixtures.tls",
    "pytester",  # tests/test_tiers.py runs the tier plugin on a planted suite
]
