"""TLS of the HTTP API: the certificate and key ``hrx serve`` and ``hrx up`` hand to uvicorn, checked first.

Both or neither: a certificate without its key (or the reverse) is a mistake, never a reason to serve plain
HTTP. The pair is loaded once here, so that a file that cannot be read, a key that is not the certificate's or
an encrypted key (which would make uvicorn prompt on a terminal nobody watches) stops the process with a
message before anything else starts.
"""
from __future__ import annotations

import ssl

from adapters.private_files import warn_if_readable_by_others
from exchange.config import Settings


def uvicorn_tls(settings: Settings) -> dict[str, str]:
    """uvicorn's ``ssl_certfile`` and ``ssl_keyfile`` for the configured pair, or ``{}`` without TLS.

    Raises SystemExit naming the problem: one of the two missing, a file that cannot be read, not a matching
    certificate and unencrypted key.
    """
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        missing = "the certificate (--tls-cert / HRX_TLS_CERT)" if cert is None else "the key (--tls-key / HRX_TLS_KEY)"
        raise SystemExit(f"TLS: {missing} is missing: give both the certificate and its key, or neither")
    for path, what in ((cert, "certificate"), (key, "key")):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise SystemExit(f"TLS: cannot read the {what} file {path}: {exc.strerror}") from None
    try:
        # An empty password: an encrypted key fails here instead of prompting.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        raise SystemExit(f"TLS: {cert} and {key} are not a PEM certificate and its unencrypted private key "
                         f"({exc.reason or exc})") from None
    warn_if_readable_by_others(key, "TLS key")
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
