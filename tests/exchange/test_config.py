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
