"""Runtime settings, read once from the environment.

Every knob has an embedded default so that ``hrx up`` works on a fresh machine: a bundled broker, an SQLite
file under ``./var`` and a pseudonym key file beside it (never inside the database or on a topic), which only
``hrx up``'s first run or ``hrx keys init`` creates. Other processes started with the same var directory take
what their environment leaves open from the running ``hrx up``'s ``var/stack.json`` (exchange.stack_file).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exchange.stack_file import StackFile, read_stack_file
from schemas.topics import DEFAULT_PARTITIONS

ENGINE_GROUP = "hrx-engine"
#: PIPL §56 (personal information protection impact assessments and records of processing) and the exchange's
#: rule: audit records are kept at least three years. In days, a leap day included.
AUDIT_MINIMUM_DAYS = 3 * 365 + 1


@dataclass(frozen=True)
class Retention:
    """How long ``hrx purge`` keeps what it prunes (README, "Operations"); each from ``HRX_RETAIN_*`` in days.

    None keeps forever. Results are kept by default: a horizon is a policy decision of the exchange's operator
    (the recognition windows are far shorter, but patients read their own history).
    """

    #: DICOM spool instances of a study published this long ago (and not changed since): HRX_RETAIN_DICOM_SPOOL_DAYS.
    #: Longer than a modality may still send instances of a study it finished.
    dicom_spool_days: float | None = 30.0
    #: HL7 ACK journal entries, past the senders' resend horizon: HRX_RETAIN_HL7_ACK_DAYS.
    hl7_ack_days: float | None = 30.0
    #: Dead letters resolved (their result stored since, at that version or a later one) this long ago:
    #: HRX_RETAIN_DEAD_LETTERS_DAYS.
    dead_letter_days: float | None = 90.0
    #: Results whose current version was reported this long ago, every version and value: HRX_RETAIN_RESULTS_DAYS.
    results_days: float | None = None
    #: Audit records: HRX_RETAIN_AUDIT_DAYS, never below :data:`AUDIT_MINIMUM_DAYS`.
    audit_days: float | None = None

    def __post_init__(self) -> None:
        if self.audit_days is not None and self.audit_days < AUDIT_MINIMUM_DAYS:
            raise ValueError(f"HRX_RETAIN_AUDIT_DAYS={self.audit_days:g} is shorter than the {AUDIT_MINIMUM_DAYS} "
                             "days (3 years) audit records must be kept (PIPL §56): set at least "
                             f"{AUDIT_MINIMUM_DAYS}, or leave it unset to keep them forever")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Retention:
        defaults = cls()
        return cls(**{name: _days(env, variable, getattr(defaults, name)) for name, variable in RETENTION_ENV.items()})


#: Retention field → its environment variable.
RETENTION_ENV = {"dicom_spool_days": "HRX_RETAIN_DICOM_SPOOL_DAYS", "hl7_ack_days": "HRX_RETAIN_HL7_ACK_DAYS",
                 "dead_letter_days": "HRX_RETAIN_DEAD_LETTERS_DAYS", "results_days": "HRX_RETAIN_RESULTS_DAYS",
                 "audit_days": "HRX_RETAIN_AUDIT_DAYS"}


def _days(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    """A number of days (``keep`` or ``forever``: None); ValueError naming the variable otherwise."""
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("keep", "forever"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of days or 'keep', not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a number of days ≥ 0 or 'keep', not {text!r}")
    return value
#: ``POST /fhir`` refuses larger bodies before reading them (HRX_FHIR_MAX_BYTES).
FHIR_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """What a process of the exchange needs to know about its surroundings."""

    var_dir: Path = field(default_factory=lambda: Path("var"))
    kafka_bootstrap: str | None = None  # None: start the embedded broker
    database_url: str | None = None  # None: SQLite file under var_dir
    pseudonym_key: bytes | None = None
    pseudonym_key_file: Path | None = None
    pseudonym_algorithm: str | None = None  # None: the pseudonymizer's default (HMAC-SM3)
    #: Key ids the engine accepts besides its own key's (a rotation period): HRX_PSEUDONYM_ACCEPTED_KEY_IDS.
    accepted_key_ids: tuple[str, ...] = ()
    codes_dir: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    engine_group: str = ENGINE_GROUP
    #: Partitions per topic (HRX_TOPIC_PARTITIONS, ``topic=count,…`` over the defaults of schemas/topics.py):
    #: at most this many engine consumers share a topic's work.
    partitions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PARTITIONS))
    #: Copies of each topic's partitions kept by the Kafka cluster (HRX_TOPIC_REPLICATION_FACTOR): 3 on a real
    #: cluster (with min.insync.replicas 2, an acknowledged publish survives the loss of one broker); the embedded
    #: single broker of ``hrx up`` always uses 1.
    topic_replication: int = 1
    fhir_max_bytes: int = FHIR_MAX_BYTES
    #: Validate every /fhir read/search answer with the fhir.resources R4B models before sending it
    #: (HRX_FHIR_VALIDATE=1; off by default: it is ~90 % of a large search's time, see bench/fhir_search.py, and
    #: the tests validate every answer the handlers build).
    fhir_validate: bool = False
    #: PostgreSQL: the role the API runs as, granted only SELECT and INSERT on the audit table by the migration
    #: that makes it append-only (HRX_API_DB_ROLE; see README, "Database roles").
    api_db_role: str | None = None
    #: Certificate chain and private key (PEM) of the HTTP server: both or neither (HRX_TLS_CERT, HRX_TLS_KEY).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Browser origins allowed to call the API across origins (HRX_CORS_ORIGINS); none by default.
    cors_origins: tuple[str, ...] = ()
    #: Where the web UI answers, for the links of CDS Hooks cards (HRX_UI_BASE_URL); None: ``/ui`` of the API.
    ui_base_url: str | None = None
    #: Origins allowed to frame the web pages (HRX_UI_FRAME_ANCESTORS, space-separated): the HIS that embeds
    #: ``/ui/``; none: no site may frame them.
    ui_frame_ancestors: tuple[str, ...] = ()
    #: The language of CDS Hooks cards when the client's Accept-Language names neither zh nor en
    #: (HRX_CDS_LANGUAGE: zh or en).
    cds_language: str = "zh"
    #: What ``hrx purge`` keeps, and for how long (HRX_RETAIN_*).
    retention: Retention = field(default_factory=Retention)
    #: The running ``hrx up`` whose stack file filled what the environment left open, if any.
    stack: StackFile | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, stack: bool = True) -> Settings:
        """Settings from the environment; with ``stack``, the gaps are filled from a running ``hrx up``'s
        stack file in the same var directory (broker, store, codes, key file and algorithm)."""
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("HRX_VAR_DIR", "var"))
        key = env.get("HRX_PSEUDONYM_KEY")
        key_file = env.get("HRX_PSEUDONYM_KEY_FILE")
        running = read_stack_file(var_dir) if stack else None
        bootstrap = env.get("HRX_KAFKA_BOOTSTRAP") or None
        database_url = env.get("HRX_DATABASE_URL") or None
        codes_dir = env.get("HRX_CODES_DIR") or None
        algorithm = env.get("HRX_PSEUDONYM_ALGORITHM") or None
        if running is not None:
            bootstrap = bootstrap or running.kafka_bootstrap
            database_url = database_url or running.database_url
            codes_dir = codes_dir or running.codes_dir
            algorithm = algorithm or running.pseudonym_algorithm
            if not key and not key_file:
                key_file = running.pseudonym_key_file
        return cls(
            var_dir=var_dir,
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            pseudonym_key=key.encode() if key else None,
            pseudonym_key_file=Path(key_file) if key_file else None,
            pseudonym_algorithm=algorithm,
            accepted_key_ids=tuple(k.strip() for k in env.get("HRX_PSEUDONYM_ACCEPTED_KEY_IDS", "").split(",")
                                   if k.strip()),
            codes_dir=Path(codes_dir) if codes_dir else None,
            http_host=env.get("HRX_HTTP_HOST", "127.0.0.1"),
            http_port=int(env.get("HRX_HTTP_PORT", "8080")),
            engine_group=env.get("HRX_ENGINE_GROUP", ENGINE_GROUP),
            partitions=_partitions(env.get("HRX_TOPIC_PARTITIONS", "")),
            topic_replication=_positive(env, "HRX_TOPIC_REPLICATION_FACTOR", 1, "copies"),
            fhir_max_bytes=_positive(env, "HRX_FHIR_MAX_BYTES", FHIR_MAX_BYTES, "bytes"),
            fhir_validate=env.get("HRX_FHIR_VALIDATE", "0").strip().lower() in ("1", "true", "yes", "on"),
            api_db_role=env.get("HRX_API_DB_ROLE") or None,
            tls_cert=Path(env["HRX_TLS_CERT"]) if env.get("HRX_TLS_CERT") else None,
            tls_key=Path(env["HRX_TLS_KEY"]) if env.get("HRX_TLS_KEY") else None,
            cors_origins=_origins(env.get("HRX_CORS_ORIGINS", ""), "HRX_CORS_ORIGINS"),
            ui_base_url=_ui_base(env.get("HRX_UI_BASE_URL", "")),
            ui_frame_ancestors=_origins(",".join(env.get("HRX_UI_FRAME_ANCESTORS", "").split()),
                                        "HRX_UI_FRAME_ANCESTORS"),
            cds_language=_language(env.get("HRX_CDS_LANGUAGE", "zh")),
            retention=Retention.from_env(env),
            stack=running,
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'hrx.db').resolve()}"

    @property
    def api_url(self) -> str:
        """Where the API answers: ``https://`` when it serves TLS."""
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.http_port}"

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process (engine, adapter) see the same settings."""
        env = {"HRX_VAR_DIR": str(self.var_dir), "HRX_DATABASE_URL": self.effective_database_url,
               "HRX_HTTP_HOST": self.http_host, "HRX_HTTP_PORT": str(self.http_port),
               "HRX_ENGINE_GROUP": self.engine_group}
        if self.pseudonym_algorithm:
            env["HRX_PSEUDONYM_ALGORITHM"] = self.pseudonym_algorithm
        if self.accepted_key_ids:
            env["HRX_PSEUDONYM_ACCEPTED_KEY_IDS"] = ",".join(self.accepted_key_ids)
        if self.kafka_bootstrap:
            env["HRX_KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        if self.pseudonym_key_file:
            env["HRX_PSEUDONYM_KEY_FILE"] = str(self.pseudonym_key_file)
        elif self.pseudonym_key:
            env["HRX_PSEUDONYM_KEY"] = self.pseudonym_key.decode()
        if self.codes_dir:
            env["HRX_CODES_DIR"] = str(self.codes_dir)
        if self.partitions != DEFAULT_PARTITIONS:
            env["HRX_TOPIC_PARTITIONS"] = ",".join(f"{t}={n}" for t, n in self.partitions.items())
        if self.topic_replication != 1:
            env["HRX_TOPIC_REPLICATION_FACTOR"] = str(self.topic_replication)
        if self.fhir_max_bytes != FHIR_MAX_BYTES:
            env["HRX_FHIR_MAX_BYTES"] = str(self.fhir_max_bytes)
        if self.fhir_validate:
            env["HRX_FHIR_VALIDATE"] = "1"
        if self.api_db_role:
            env["HRX_API_DB_ROLE"] = self.api_db_role
        if self.ui_base_url:
            env["HRX_UI_BASE_URL"] = self.ui_base_url
        if self.ui_frame_ancestors:
            env["HRX_UI_FRAME_ANCESTORS"] = " ".join(self.ui_frame_ancestors)
        if self.cds_language != "zh":
            env["HRX_CDS_LANGUAGE"] = self.cds_language
        for name, variable in RETENTION_ENV.items():
            days = getattr(self.retention, name)
            env[variable] = "keep" if days is None else f"{days:g}"
        return env


def _positive(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of {unit}, not {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


def _partitions(text: str) -> dict[str, int]:
    """HRX_TOPIC_PARTITIONS: ``topic=count`` pairs, comma-separated, over the defaults; only the exchange's topics."""
    partitions = dict(DEFAULT_PARTITIONS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        topic, _, count = item.partition("=")
        topic = topic.strip()
        if topic not in DEFAULT_PARTITIONS:
            raise ValueError(f"HRX_TOPIC_PARTITIONS: {topic!r} is not a topic of the exchange "
                             f"({', '.join(DEFAULT_PARTITIONS)})")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"HRX_TOPIC_PARTITIONS: {item!r}: use topic=count with a positive count")
        partitions[topic] = int(count)
    return partitions


def _origins(text: str, name: str) -> tuple[str, ...]:
    """HRX_CORS_ORIGINS (comma-separated), HRX_UI_FRAME_ANCESTORS (space-separated, given here comma-separated):
    origins (``https://his.example.cn``, a port if not the default); never ``*``: an operator names each browser
    application that may call the API or frame its pages."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or "*" in rest:
            raise ValueError(f"{name}: {origin!r} is not an origin such as https://his.example.cn "
                             "(scheme and host, a port if not the default; no path, no wildcard)")
    return origins


def _ui_base(text: str) -> str | None:
    """HRX_UI_BASE_URL: the absolute http(s) URL of the web UI (CDS Hooks links are ``absolute``)."""
    text = text.strip().rstrip("/")
    if not text:
        return None
    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise ValueError(f"HRX_UI_BASE_URL: {text!r} is not an absolute http(s) URL such as https://hrx.example.cn/ui")
    return text


def _language(text: str) -> str:
    text = text.strip().lower() or "zh"
    if text not in ("zh", "en"):
        raise ValueError(f"HRX_CDS_LANGUAGE must be zh or en, not {text!r}")
    return text
