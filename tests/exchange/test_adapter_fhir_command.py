"""``hrx adapter fhir`` (exchange/cli/adapter_fhir.py): the rules of POST /fhir for Bundles in files."""
from __future__ import annotations

import json

from click.testing import CliRunner

from adapters.fhir import build_events
from adapters.pipeline import ResultPipeline
from tests.adapters.fhir_examples import RESIDENT_ID, example, localise
from tests.fixtures.pseudonyms import TEST_KEY
from tests.exchange.test_conflicts import stored


def test_files_are_published_refused_on_conflict_and_bounded(tmp_path, broker, database, database_url, book,  # type: ignore[no-untyped-def]
                                                             pseudonymizer) -> None:
    from exchange.cli import main

    files = {}
    for name in ("Bundle-101", "Bundle-lipids", "Bundle-ghp"):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(localise(example(name))), "utf-8")
    env = {"HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_DATABASE_URL": database_url, "HRX_VAR_DIR": str(tmp_path / "var")}
    runner = CliRunner()
    first = runner.invoke(main, ["adapter", "fhir", str(files["Bundle-101"])], env=env)
    assert first.exit_code == 0, first.output
    assert f"{files['Bundle-101']}: published 1 result(s)" in first.stdout

    # The engine would store it; here the store gets it directly.
    [cbc] = build_events(ResultPipeline(book, pseudonymizer), localise(example("Bundle-101")))
    stored(database, cbc.event)
    result = runner.invoke(main, ["adapter", "fhir", str(files["Bundle-101"]), str(files["Bundle-lipids"])], env=env)
    assert result.exit_code == 1
    assert f"{files['Bundle-101']}: published 1 result(s), 1 of them already stored" in result.stdout
    assert f"{files['Bundle-lipids']}: refused: Bundle.entry[0].resource: " in result.stderr
    assert "already stored with different content" in result.stderr
    assert "1 file(s) published, 1 refused" in result.stdout

    small = runner.invoke(main, ["adapter", "fhir", str(files["Bundle-ghp"])],
                          env={**env, "HRX_FHIR_MAX_BYTES": "65536"})
    assert small.exit_code == 1 and "larger than 65536 (HRX_FHIR_MAX_BYTES)" in small.stderr
    assert RESIDENT_ID not in result.output + small.output
