"""Settings of the HTTP API (exchange/config.py): loopback by default, TLS files, the CORS origin list."""
from __future__ import annotations

from pathlib import Path

import pytest

from exchange.config import Settings


def test_the_api_binds_loopback_unless_told_otherwise() -> None:
    assert Settings().http_host == "127.0.0.1"
    assert Settings.from_env({}, stack=False).http_host == "127.0.0.1"
    assert Settings.from_env({"HRX_HTTP_HOST": "0.0.0.0"}, stack=False).http_host == "0.0.0.0"


def test_the_container_binds_every_address_explicitly() -> None:
    """In a container loopback is unreachable from the published port: its image says so itself."""
    dockerfile = (Path(__file__).parents[2] / "docker" / "Dockerfile").read_text()
    assert "HRX_HTTP_HOST=0.0.0.0" in dockerfile


def test_tls_files_and_the_api_url() -> None:
    plain = Settings.from_env({"HRX_HTTP_PORT": "8443"}, stack=False)
    assert (plain.tls_cert, plain.tls_key, plain.api_url) == (None, None, "http://127.0.0.1:8443")
    tls = Settings.from_env({"HRX_TLS_CERT": "/etc/hrx/api.crt", "HRX_TLS_KEY": "/etc/hrx/api.key",
                             "HRX_HTTP_HOST": "::1"}, stack=False)
    assert (tls.tls_cert, tls.tls_key) == (Path("/etc/hrx/api.crt"), Path("/etc/hrx/api.key"))
    assert tls.api_url == "https://[::1]:8080"


def test_no_cors_origin_unless_listed() -> None:
    assert Settings.from_env({}, stack=False).cors_origins == ()
    listed = Settings.from_env({"HRX_CORS_ORIGINS": "https://his.example.cn, http://10.1.2.3:8000/"}, stack=False)
    assert listed.cors_origins == ("https://his.example.cn", "http://10.1.2.3:8000")


@pytest.mark.parametrize("origin", ["*", "https://*.example.cn", "his.example.cn", "https://his.example.cn/app",
                                    "ftp://his.example.cn"])
def test_a_cors_setting_that_is_not_a_list_of_origins_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="HRX_CORS_ORIGINS"):
        Settings.from_env({"HRX_CORS_ORIGINS": origin}, stack=False)


def test_the_ui_base_and_the_cds_language() -> None:
    assert (Settings.from_env({}, stack=False).ui_base_url, Settings.from_env({}, stack=False).cds_language) == (
        None, "zh")
    set_ = Settings.from_env({"HRX_UI_BASE_URL": "https://hrx.example.cn/ui/", "HRX_CDS_LANGUAGE": "EN"}, stack=False)
    assert (set_.ui_base_url, set_.cds_language) == ("https://hrx.example.cn/ui", "en")
    assert Settings.from_env(set_.to_env(), stack=False).ui_base_url == "https://hrx.example.cn/ui"
    with pytest.raises(ValueError, match="HRX_UI_BASE_URL"):
        Settings.from_env({"HRX_UI_BASE_URL": "/ui"}, stack=False)
    with pytest.raises(ValueError, match="HRX_CDS_LANGUAGE"):
        Settings.from_env({"HRX_CDS_LANGUAGE": "fr"}, stack=False)
def test_topic_partitions_and_replication_from_the_environment() -> None:
    from schemas.topics import DEFAULT_PARTITIONS, TOPIC_IMAGING, TOPIC_LAB

    default = Settings.from_env({}, stack=False)
    assert (default.partitions, default.topic_replication) == (DEFAULT_PARTITIONS, 1)
    assert "HRX_TOPIC_PARTITIONS" not in default.to_env() and "HRX_TOPIC_REPLICATION_FACTOR" not in default.to_env()
    cluster = Settings.from_env({"HRX_TOPIC_PARTITIONS": f" {TOPIC_LAB}=12, {TOPIC_IMAGING}=12 ,",
                                 "HRX_TOPIC_REPLICATION_FACTOR": "3"}, stack=False)
    assert cluster.partitions == {**DEFAULT_PARTITIONS, TOPIC_LAB: 12, TOPIC_IMAGING: 12}
    assert cluster.topic_replication == 3
    # hrx up's children see the same topics
    assert Settings.from_env(cluster.to_env(), stack=False).partitions == cluster.partitions
    assert Settings.from_env(cluster.to_env(), stack=False).topic_replication == 3


@pytest.mark.parametrize(("name", "value", "message"), [
    ("HRX_TOPIC_PARTITIONS", "hr.results.labs.v1=12", "'hr.results.labs.v1' is not a topic of the exchange"),
    ("HRX_TOPIC_PARTITIONS", "hr.results.lab.v1=0", "use topic=count with a positive count"),
    ("HRX_TOPIC_PARTITIONS", "hr.results.lab.v1", "use topic=count with a positive count"),
    ("HRX_TOPIC_REPLICATION_FACTOR", "three", "must be a whole number of copies"),
    ("HRX_TOPIC_REPLICATION_FACTOR", "0", "must be positive"),
])
def test_a_topic_setting_that_makes_no_sense_is_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({name: value}, stack=False)
