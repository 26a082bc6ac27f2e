"""``hrx keys`` (exchange/cli/keys.py), and every other process refusing to start without the exchange's key."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.pseudonymize import Pseudonymizer
from exchange.broker import free_port

# Every test here runs hrx commands in fresh processes.
pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data"
RESIDENT_ID = "11010519491231002X"


def _invoke(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    from exchange.cli import main

    clean = {name: None for name in os.environ if name.startswith("HRX_")}  # only what the test sets
    return CliRunner().invoke(main, args, env={**clean, **env})


def test_keys_init_writes_a_private_key_once_and_prints_its_id(tmp_path: Path) -> None:
    env = {"HRX_VAR_DIR": str(tmp_path / "var")}
    path = tmp_path / "var" / "pseudonym.key"
    first = _invoke(["keys", "init"], env)
    assert first.exit_code == 0, first.output
    key_id = first.stdout.strip().splitlines()[-1]
    assert key_id == Pseudonymizer(path.read_bytes()).key_id and key_id.startswith("sm3-")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_bytes()
    again = _invoke(["keys", "init"], env)
    assert again.exit_code == 1 and "never replaced" in again.output and key_id in again.output
    assert path.read_bytes() == key
    shown = _invoke(["keys", "id"], env)
    assert shown.exit_code == 0 and shown.stdout.strip() == key_id
    other = _invoke(["keys", "id"], {**env, "HRX_PSEUDONYM_ALGORITHM": "sha256"})
    assert other.exit_code == 0 and other.stdout.strip() == Pseudonymizer(key, "sha256").key_id != key_id


def test_keys_init_writes_the_configured_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "exchange.key"
    made = _invoke(["keys", "init"], {"HRX_VAR_DIR": str(tmp_path / "var"), "HRX_PSEUDONYM_KEY_FILE": str(path)})
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().splitlines()[-1] == Pseudonymizer(path.read_bytes()).key_id
    assert not (tmp_path / "var").exists()


def test_keys_init_refuses_an_algorithm_it_cannot_compute(tmp_path: Path) -> None:
    made = _invoke(["keys", "init"], {"HRX_VAR_DIR": str(tmp_path / "var"), "HRX_PSEUDONYM_ALGORITHM": "md5"})
    assert made.exit_code == 1 and "md5" in made.output
    assert not (tmp_path / "var").exists()


COMMANDS = {
    "engine": ["engine"],
    "serve": ["serve"],
    "pseudonym": ["pseudonym", RESIDENT_ID],
    "hl7 files": ["adapter", "hl7", "--institution", "bj-chaoyang-001",
                  str(DATA / "hl7" / "bj-chaoyang-001-batch.hl7")],
    "hl7 listener": ["adapter", "hl7", "--institution", "bj-chaoyang-001", "--listen", "127.0.0.1:{port}"],
    "csv": ["adapter", "csv", str(DATA / "csv" / "lis-generic-zh.csv"), "--institution", "bj-chaoyang-001",
            "--profile", "lis-generic-zh"],
    "fhir": ["adapter", "fhir", str(DATA / "fhir" / "lab-bundle.json")],
    "dicom-scp": ["adapter", "dicom-scp", "--institution", "bj-chaoyang-001", "--host", "127.0.0.1",
                  "--port", "{port}"],
    "dicom-pull": ["adapter", "dicom-pull", "--institution", "bj-chaoyang-001", "--pacs", "127.0.0.1:9",
                   "--pacs-ae", "PACS", "--since", "20240101", "--port", "{port}", "--once"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_process_refuses_to_start_without_the_key(name: str, tmp_path: Path) -> None:
    """An adapter started with another HRX_VAR_DIR once made a key of its own and published pseudonyms that
    no lookup by resident ID finds; now it stops at once, naming what to set, and creates nothing."""
    var = tmp_path / "other-var"
    args = [a.replace("{port}", str(free_port())) for a in COMMANDS[name]]
    run = _invoke(args, {"HRX_VAR_DIR": str(var), "HRX_KAFKA_BOOTSTRAP": "127.0.0.1:9",
                         "HRX_DATABASE_URL": f"sqlite:///{tmp_path / 'hrx.db'}"})
    assert run.exit_code == 1, run.output
    for hint in ("HRX_PSEUDONYM_KEY_FILE", "HRX_VAR_DIR", "hrx keys init"):
        assert hint in run.output
    assert not var.exists()  # no key file, no journal, no spool
    assert not (tmp_path / "hrx.db").exists()
