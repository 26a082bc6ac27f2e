"""docker/compose.yaml: valid against the Compose Specification's JSON Schema, shaped as a deployment that
starts (start order, health checks, restart policies, named volumes, a secret the service user can read), and
agreeing with the documented settings (README, "Configuration") and docker/.env.example both ways.

Nothing here starts a container: the build machines have no container engine (README, "Deployment")."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose" / "compose-spec.json"
#: The packages whose code reads settings (tests, bench and chaos have their own, not the product's).
PRODUCT = ("exchange", "adapters", "codes", "schemas")
HRX_SERVICES = {"migrate", "api", "engine", "hl7", "dicom"}
INTERPOLATED = re.compile(r"\$\{([A-Z0-9_]+)")


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DOCKER / "compose.yaml").read_text("utf-8"))  # merge keys (<<) resolved


def _readme_tables() -> tuple[set[str], set[str]]:
    """The variables of README's "Configuration" table (settings hrx reads) and of the compose-only table below it."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text[text.index("\n## Configuration\n"):]
    section = section[:section.index("\n## ", 5)]
    settings_part, _, compose_part = section.partition("`docker/compose.yaml` also reads")
    names = re.compile(r"^\|([^|]*)\|", re.MULTILINE)

    def variables(part: str) -> set[str]:
        return {v for cell in names.findall(part) for v in re.findall(r"`(HRX_[A-Z0-9_]+)`", cell)}
    return variables(settings_part), variables(compose_part)


def _read_by_code() -> set[str]:
    found: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"[\"'](HRX_[A-Z0-9_]+)[\"']", path.read_text("utf-8")))
    return found


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (DOCKER / ".env.example").read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def test_compose_file_is_valid_against_the_compose_specification_schema() -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    errors = sorted(Draft7Validator(schema).iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_catches_what_compose_would_refuse() -> None:
    """The validation is not vacuous: a misspelt key and a wrong condition are errors."""
    schema = Draft7Validator(json.loads(SCHEMA.read_text("utf-8")))
    broken = _compose()
    broken["services"]["engine"]["restrat"] = "always"
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"
    messages = [e.message for e in schema.iter_errors(broken)]
    assert any("restrat" in m for m in messages) and any("service_done" in m for m in messages)


def test_services_start_in_order_restart_and_keep_their_data_in_named_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == HRX_SERVICES | {"postgres", "kafka"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["migrate"]["command"] == ["hrx", "migrate", "--topics"]
    assert services["migrate"]["restart"] == "no"
    for name, service in services.items():
        waits = service.get("depends_on", {})
        for dependency, how in waits.items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health: it has none"
        if name != "migrate":
            assert service["restart"] == "unless-stopped", name
        if name in HRX_SERVICES - {"migrate"}:
            assert waits["migrate"] == {"condition": "service_completed_successfully"}, name
            assert waits["postgres"]["condition"] == waits["kafka"]["condition"] == "service_healthy", name
        for volume in service.get("volumes", []):
            source, _, target = volume.partition(":")
            assert source in compose["volumes"], f"{name}: {source} is not a named volume (a bind mount?)"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                 "kafka": {"condition": "service_healthy"}}
    for name in ("api", "hl7", "dicom", "postgres", "kafka"):
        assert services[name]["healthcheck"]["test"], name
    engine = services["engine"]
    assert "container_name" not in engine and "ports" not in engine  # `--scale engine=N` must work
    var_dir = services["api"]["environment"]["HRX_VAR_DIR"]
    for name in HRX_SERVICES - {"migrate"}:  # the HL7 journal, the DICOM spool, every role's var directory
        assert any(v.endswith(f":{var_dir}") for v in services[name]["volumes"]), name
    assert "pg-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert f"kafka-data:{services['kafka']['environment']['KAFKA_LOG_DIRS']}" in services["kafka"]["volumes"]


def test_the_pseudonym_key_secret_is_readable_by_the_images_user() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text("utf-8")
    uid = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile).group(1)  # type: ignore[union-attr]
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", dockerfile).group(1)  # type: ignore[union-attr]
    assert re.search(rf"^USER {uid}:{gid}$", dockerfile, re.MULTILINE)
    compose = _compose()
    for name in HRX_SERVICES:
        service = compose["services"][name]
        [secret] = service["secrets"]
        assert secret["source"] == "pseudonym_key" and (secret["uid"], secret["gid"]) == (uid, gid), name
        assert secret["mode"] == 0o400, name  # owner-read only
        assert service["environment"]["HRX_PSEUDONYM_KEY_FILE"] == f"/run/secrets/{secret['target']}", name
    assert compose["secrets"]["pseudonym_key"]["file"] == "./secrets/pseudonym.key"


def test_compose_env_example_and_documented_settings_agree_both_ways() -> None:
    settings, compose_only = _readme_tables()
    # The README's table of settings is exactly what the product's code reads.
    read = _read_by_code()
    assert read - settings == set(), f"read by the code but not documented in README, Configuration: {read - settings}"
    assert settings - read == set(), f"documented but read by no code: {settings - read}"
    # What compose and the image hand to the exchange's processes are documented settings.
    compose = _compose()
    passed = {v for name in HRX_SERVICES for v in compose["services"][name]["environment"] if v.startswith("HRX_")}
    passed |= set(re.findall(r"\b(HRX_[A-Z0-9_]+)=", (DOCKER / "Dockerfile").read_text("utf-8")))
    assert passed - settings == set(), f"compose sets undocumented variables: {passed - settings}"
    # What compose interpolates is exactly what docker/.env.example lists, and each is a setting or compose's own.
    text = (DOCKER / "compose.yaml").read_text("utf-8")
    interpolated = set(INTERPOLATED.findall(text))
    example = set(_env_example())
    assert interpolated == example, f"only in compose: {interpolated - example}; only in .env.example: " \
                                    f"{example - interpolated}"
    assert compose_only == interpolated - settings, "README's compose-only table and compose's own variables differ"
    # A setting compose interpolates reaches the services under its own name.
    for name in interpolated & settings:
        assert name in passed, f"{name} is interpolated but passed to no service"


def test_env_example_holds_valid_settings() -> None:
    from exchange.config import Settings

    example = _env_example()
    settings = Settings.from_env({k: v for k, v in example.items() if v}, stack=False)
    assert settings.partitions["hr.results.lab.v1"] == settings.partitions["hr.results.imaging.v1"] == 12
    assert settings.topic_replication == 1  # one Kafka node in compose.yaml


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no `docker compose` here (this machine has no container engine): the schema test stands in for it")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env = {**os.environ, **{k: v or "x" for k, v in _env_example().items()}}
    run = subprocess.run(["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
