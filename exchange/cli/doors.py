"""The options every network door shares (``hrx adapter hl7 --listen``, ``hrx adapter dicom-scp``): the
allow-list and TLS (docs/rules.md, "Network doors").

Each option also reads an environment variable, so that the listeners ``hrx up`` starts (which inherit its
environment) get the same allow-list and certificate.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from adapters.doors import AllowList
    from adapters.tls import ServerContext
    from codes import CodeBook

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OPTIONS = [
    click.option("--allow", "allow_file", type=_FILE, envvar="HRX_DOOR_ALLOW", show_envvar=True,
                 help="allow-list of the callers and the institution each may send for (docs/doors.example.yaml); "
                      "without it the door is open to anyone: development only"),
    click.option("--tls-cert", type=_FILE, envvar="HRX_DOOR_TLS_CERT", show_envvar=True,
                 help="serve over TLS with this PEM certificate (chain)"),
    click.option("--tls-key", type=_FILE, envvar="HRX_DOOR_TLS_KEY", show_envvar=True,
                 help="the PEM private key of --tls-cert (default: in the --tls-cert file)"),
    click.option("--tls-ca", type=_FILE, envvar="HRX_DOOR_TLS_CA", show_envvar=True,
                 help="require client certificates issued by this PEM CA (mutual TLS)"),
]


def door_options(func: F) -> F:
    """Add --allow, --tls-cert, --tls-key and --tls-ca to a command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def allow_list(path: Path | None, book: CodeBook) -> AllowList | None:
    """The parsed allow-list, or None (an open door); a usage error naming file:line when it is unusable."""
    if path is None:
        return None
    from adapters.doors import AllowListError, load_allow_list

    try:
        return load_allow_list(path, book.institutions)
    except AllowListError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow") from None


def tls_context(cert: Path | None, key: Path | None, ca: Path | None, handshake_timeout: float) -> ServerContext | None:
    """The listener's TLS context, or None without --tls-cert."""
    if cert is None:
        if key is not None or ca is not None:
            raise click.UsageError("--tls-key and --tls-ca need --tls-cert")
        return None
    from adapters.tls import TlsConfigError, server_context

    try:
        return server_context(cert, key, ca, handshake_timeout=handshake_timeout)
    except TlsConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--tls-cert") from None


def metrics_port_option(command: F) -> F:
    """``--metrics-port`` (or ``HRX_METRICS_PORT``): serve this process's metrics in the Prometheus text format on
    ``HRX_METRICS_HOST`` (default 127.0.0.1) at that port; none by default. Shared by the engine and the
    listeners (the API serves ``/metrics`` itself)."""
    return click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="HRX_METRICS_PORT",
                        show_envvar=True, help="serve /metrics on this port (HRX_METRICS_HOST, default 127.0.0.1; "
                                               "0: a free port, logged)")(command)


def start_metrics(port: int | None) -> None:
    """Start the metrics port of ``--metrics-port``, if one was given."""
    if port is not None:
        from adapters.metrics import serve_metrics

        serve_metrics(port)
