"""The one Settings object; environment variables use the prefix FHIR_SERVER_."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


ENV_PREFIX = "FHIR_SERVER_"


def _loopback(host: str) -> bool:
    """Whether `host` names this machine (a relay beside the server)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TrustedIssuerSetting(BaseModel):
    """An external OpenID provider whose access tokens are accepted (docs/auth.md)."""

    issuer: str
    jwks_uri: str
    audience: str = ""  # empty: this server's FHIR base URL
    psc: bool = False  # Pro Santé Connect: tokens name a professional by RPPS (auth/psc.py)


class WriteProfileSetting(BaseModel):
    """Profiles every write of `type` is checked against, by every client or those named
    (docs/validation.md, "Profiles required on write")."""

    type: str
    profiles: list[str] = Field(min_length=1)
    clients: list[str] | None = None  # None: every client


class Settings(BaseSettings):
    """Server configuration. Every field can be set as FHIR_SERVER_<NAME> (upper case)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    base_url: str = Field(
        "",
        description="Public base URL of the FHIR endpoint, used in Location headers and links; "
        "empty means http://localhost:<port>/fhir.",
    )
    data_dir: Path = Field(
        Path("data"), description="Directory of the embedded store and of the server's own files "
        "(signing keys, users and clients, the audit hash chain).")
    store: str = Field(
        "",
        description="Store URL; empty means sqlite:///<data_dir>/fhir.db.",
    )
    audit_store: str = Field(
        "", description="Store URL of the audit trail; empty means sqlite:///<data_dir>/audit.db.",
    )
    encryption: bool = Field(
        True, description="Encrypt every stored resource version (AES-256-GCM under per-patient "
        "data keys, docs/security.md); off only for measurements and stores made without it.",
    )
    key_ring: Path | None = Field(
        None, description="The key ring file (0600, keep it off the data volume and out of its "
        "backups); empty means <data_dir>/keyring.json. Create it with `fhir-server keys init`.",
    )
    data_key_cache: int = Field(
        150_000, ge=1, description="Unwrapped data keys kept in memory per process (an LRU, about "
        "400 bytes each: ~60 MB when full); beyond it a key is read and unwrapped again at each use. "
        "Set it above the patients a pass over the population reads (the re-match job) plus the "
        "resource types; a destroyed key is never kept, whatever the size.",
    )
    key_provider: Literal["local", "pkcs11"] = Field(
        "local", description="Who holds the key-encryption keys: `local` (the key ring file) or "
        "`pkcs11` (an HSM or SoftHSM token: FHIR_SERVER_PKCS11_*; docs/security.md).",
    )
    pkcs11_module: Path | None = Field(
        None, description="The PKCS#11 library of the HSM (e.g. /usr/lib/softhsm/libsofthsm2.so); "
        "with key_provider pkcs11.",
    )
    pkcs11_token: str = Field("", description="The label of the PKCS#11 token holding the keys.")
    pkcs11_pin_file: Path | None = Field(
        None, description="A file (0600) holding the PKCS#11 user PIN (never a flag or a variable: "
        "they show in process listings).",
    )
    backup_dir: Path | None = Field(
        None, description="Where `fhir-server backup` writes its encrypted archives (best on "
        "another volume); empty means <data_dir>/backups.",
    )
    backup_retention_days: int = Field(
        30, ge=1, description="Days a backup archive is kept; older ones are pruned after each backup.",
    )
    backup_interval_hours: int = Field(
        0, ge=0, description="Hours between the backups the server takes by itself (24: daily); "
        "0 means none (run `fhir-server backup` from cron).",
    )
    export_file_resources: int = Field(
        10_000, ge=1, description="Most resources in one $export file (docs/export.md).")
    export_file_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=15 * 1024 * 1024,
        description="About the most bytes in one $export file (below MongoDB's 16 MiB documents).")
    export_retention_seconds: int = Field(
        3600, ge=1, description="Seconds the files of a finished $export stay (the manifest's Expires).")
    export_attempts: int = Field(
        3, ge=1, description="Attempts of an $export job (a crash or an error each) before it fails.")
    export_running_per_caller: int = Field(
        2, ge=1, description="$export jobs one caller may have queued or running at once; the "
        "next kick-off answers 429 with Retry-After.")
    retention_policy: Path | None = Field(
        None, description="The retention policy (JSON, docs/privacy.md), checked at start; empty "
        "means the platform's defaults (profiles/retention_policy.json).",
    )
    retention_interval_hours: int = Field(
        0, ge=0, description="Hours between the retention runs the server makes by itself (24: "
        "daily), each in a child process at niceness 10; 0 means none (run `fhir-server retention "
        "run --nice 10` from cron).",
    )
    figures_daily: bool = Field(
        True, description="Compute the investigators' trial figures of every study ahead, at start "
        "and when the UTC day changes, in a child process at niceness 10 (`fhir-server figures "
        "run`; docs/matching.md, \"The daily figures pass\"); false: each study's first inverse "
        "$match of the day computes its own.",
    )
    pseudonym_key: Path | None = Field(
        None, description="The key of the archives' pseudonyms (0600, made at first use; keep it "
        "apart from the stores and their backups); empty means pseudonym.key beside the key ring.",
    )
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8080, description="Port to listen on.")
    workers: int = Field(1, ge=1, description="Number of uvicorn worker processes.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes)."
    )
    max_bundle_entries: int = Field(
        10_000, ge=1, description="Most entries accepted in one batch or transaction Bundle."
    )
    default_page_size: int = Field(20, ge=1, description="_count used when a search gives none.")
    max_page_size: int = Field(5000, ge=1, description="Largest _count honoured.")
    max_expansion: int = Field(
        10_000, ge=1, description="Most codes a ValueSet $expand returns (after its filter); "
        "a larger expansion is refused as too costly.",
    )
    site_status_max_age_days: int = Field(
        90, ge=1, description="Days after which a trial site's recruiting status, not confirmed "
        "since, counts as unknown.",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    validate_with_models: bool = Field(
        True,
        description="Also validate with fhir.resources models after the R4 JSON schema.",
    )
    conditional_delete_multiple: bool = Field(
        False,
        description="Let a conditional DELETE remove every match; when false, several matches give 412.",
    )
    accept_unsafe_store: bool = Field(
        False, description="Serve even if the MongoDB self-check finds unsafe settings "
        "(standalone server, missing indexes, wrong shard keys): for development only.",
    )
    demo_data: bool = Field(
        False, description="Load the bundled demo data set at start-up when the store is empty."
    )
    publish_definitions: bool = Field(
        True, description="Store the CodeSystems, ValueSets, ConceptMaps, SearchParameters and "
        "OperationDefinitions this server defines (terminology/, profiles/) at start-up, so "
        "clients can read them.",
    )
    sealed_messages_only: bool = Field(
        False, description="Refuse a Communication written by a client whose payload is not "
        "sealed (JWE, docs/sealed-messages.md), and plain notes of $refer.",
    )
    auth: Literal["smart", "off"] = Field(
        "smart",
        description="'smart': every FHIR request needs a SMART access token. 'off': no "
        "authentication at all, for local development and the demo only (logged loudly).",
    )
    public_trial_search: bool = Field(
        True, description="Requests without an Authorization header may search and read "
        "ResearchStudy and call ResearchStudy/$match with an anonymous bundle (docs/auth.md, "
        "'Without a token'); false: they get 401 like every other request without a token.",
    )
    token_lifetime: int = Field(300, ge=30, le=3600, description="Access token lifetime (s).")
    terms_version: str | None = Field(
        None, min_length=1, max_length=64, description="The version of the platform's terms in "
        "force: at sign-in, a user who has not accepted it is asked to (none: not asked).")
    terms_url: str | None = Field(
        None, description="Where the terms in force are published (the sign-in page links to "
        "it): an https:// URL (http:// on this machine only: localhost, 127.0.0.1, ::1).")
    trusted_issuers: list[TrustedIssuerSetting] = Field(
        default_factory=list,
        description="External OpenID providers whose access tokens are accepted too: "
        '[{"issuer": ..., "jwks_uri": ..., "audience": ..., "psc": false}] (audience defaults to '
        'base_url; "psc": true for Pro Santé Connect, docs/auth.md).',
    )
    write_profiles: list[WriteProfileSetting] = Field(
        default_factory=list,
        description="Profiles writes must conform to, per resource type and client: "
        '[{"type": "Patient", "profiles": [canonical, ...], "clients": [client id, ...]}] '
        "(no clients: every client; each profile one the server holds; docs/validation.md).",
    )
    mllp: bool = Field(
        False, description="Start the HL7 v2 MLLP listener beside HTTP (docs/hl7v2.md).")
    mllp_host: str = Field("127.0.0.1", description="Interface the MLLP listener listens on.")
    mllp_port: int = Field(2575, ge=0, le=65535, description="Port of the MLLP listener.")
    mllp_max_message_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest HL7 v2 message accepted over MLLP (bytes).")
    mllp_max_connections: int = Field(
        64, ge=1, description="MLLP connections open at once (per worker process); one more is "
        "closed at accept (docs/hl7v2.md).")
    hl7_keep_days: int = Field(
        30, ge=1, description="Days the HL7 v2 inbox keeps a message's content: an hourly task "
        "then wipes those applied (their key stays, to answer a resend as a duplicate) and "
        "deletes those in error or never settled (docs/hl7v2.md).")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), e.g. the portal's.",
    )
    protected_params: list[str] | None = Field(
        None, description='Search parameters indexed only as blind indexes, a JSON list like '
        '["Patient.name", "Patient.identifier"]; empty means the names, identifiers, contact points '
        "and addresses of Patient, RelatedPerson and Practitioner; [] protects none "
        "(docs/blind-indexes.md). Applies when encryption is on.",
    )
    blind_prefix_cap: int = Field(
        32, ge=1, le=256, description="Longest prefix (characters) of a protected string value "
        "indexed for the default starts-with search; a longer search value answers 400.",
    )
    referral_reminder_days: int = Field(
        5, ge=1, description="Days after which a referral without an answer reminds its "
        "recipients (the platform's terms: 5).")
    referral_reminder_repeat_days: int = Field(
        5, ge=1, description="Days between the reminders of a referral still without an answer.")
    referral_reminder_count: int = Field(
        3, ge=0, description="Most reminders a referral without an answer sends (0: none).")
    notify_link: str = Field(
        "", description="The address notifications point to (the portal); empty means the "
        "origin of base_url.")
    notify_poll_seconds: float = Field(
        30.0, gt=0, description="Seconds between two looks of the scheduler for due reminders "
        "and notifications.")
    notify_lease_seconds: int = Field(
        120, ge=5, description="Seconds a server holds a notification it is sending; one held "
        "by a server that died is sent by another after this (more than the SMTP timeout).")
    smtp_host: str = Field("", description="SMTP relay of e-mail notifications; empty: no e-mail.")
    smtp_port: int = Field(587, ge=1, le=65535, description="Port of the SMTP relay (submission).")
    smtp_sender: str = Field("", description="The From address of notifications.")
    smtp_user: str = Field("", description="SMTP user name; empty: no authentication.")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password (never logged).")
    smtp_starttls: bool = Field(
        True, description="Send only after STARTTLS (refuse a relay that does not offer it); "
        "off only for a relay on a loopback host (refused otherwise).")
    smtp_ca_file: Path | None = Field(
        None, description="Certificates trusted for the SMTP relay's TLS; empty: the system's.")
    sms_gateway_url: str = Field(
        "", description="HTTPS endpoint of the SMS gateway (docs/notifications.md; http only to "
        "a loopback host); empty: no SMS.")
    sms_gateway_token: SecretStr = Field(
        SecretStr(""), description="Bearer token of the SMS gateway (never logged).")
    protected_sort_limit: int = Field(
        10_000, ge=0, description="Most matches a `_sort` on a protected parameter sorts after "
        "decryption; a search matching more answers 400.",
    )
    subscription_endpoints: list[str] = Field(
        default_factory=list, description="URLs subscription notifications may be sent to, or "
        "below them by path segments (JSON list); empty means any HTTPS endpoint on a public address.",
    )
    subscription_loopback_http: bool = Field(
        False, description="Development: let subscriptions notify plain-HTTP endpoints on "
        "localhost or a loopback address (otherwise HTTPS only, to public addresses).",
    )
    subscription_retry_hours: float = Field(
        24.0, gt=0, description="Hours a failing subscription endpoint is retried (exponential "
        "backoff with jitter) before the subscription is set to error; its events are kept.",
    )
    subscription_events_keep_days: int = Field(
        30, ge=1, description="Days a delivered subscription event is kept for $events after "
        "its write; then an hourly task removes it (undelivered events are kept).",
    )
    subscription_timeout: int = Field(
        10, ge=1, le=60, description="Seconds a subscription endpoint may take to answer, unless "
        "the subscription asks for less (backport-timeout).",
    )
    subscription_signing_key: Path | None = Field(
        None, description="File holding the secret that signs notification bodies (HMAC-SHA256 "
        "in X-Hub-Signature-256); empty means notifications are not signed.",
    )

    @field_validator("terms_url")
    @classmethod
    def _published_over_https(cls, url: str | None) -> str | None:
        # The sign-in page links to it: another scheme (javascript:, data:) would run in it.
        if url is None:
            return url
        parts = urlsplit(url)
        if not parts.hostname or not (parts.scheme == "https" or (
                parts.scheme == "http" and _loopback(parts.hostname))):
            raise ValueError("the terms URL is https://... (http:// on localhost only)")
        return url

    @model_validator(mode="after")
    def _no_relay_in_clear(self) -> Settings:
        # Mail, the SMTP password and the gateway's token cross a network only encrypted.
        if self.smtp_host and not self.smtp_starttls and not _loopback(self.smtp_host):
            raise ValueError("smtp_starttls may be off only for a relay on a loopback host")
        gateway = urlsplit(self.sms_gateway_url)
        if self.sms_gateway_url and not (gateway.scheme == "https" or (
                gateway.scheme == "http" and _loopback(gateway.hostname or ""))):
            raise ValueError("sms_gateway_url is https (http only to a loopback host)")
        return self

    @model_validator(mode="after")
    def _default_base_url(self) -> Settings:
        # Links must name the port the server really listens on when no public URL is given.
        if not self.base_url:
            self.base_url = f"http://localhost:{self.port}/fhir"
        return self

    def environment(self) -> dict[str, str]:
        """These settings as the FHIR_SERVER_ variables that make them again in another
        process (whose `Settings()` reads its own environment): lists and objects as JSON,
        secrets in clear (the variables stay between this process and its child), a setting
        that is None as no variable at all."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif not isinstance(value, str | Path):
                value = json.dumps(self.model_dump(mode="json", include={name})[name])
            out[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return out

    @property
    def store_url(self) -> str:
        """The effective store URL."""
        return self.store or f"sqlite:///{self.data_dir / 'fhir.db'}"

    @property
    def audit_store_url(self) -> str:
        """The effective audit store URL."""
        return self.audit_store or f"sqlite:///{self.data_dir / 'audit.db'}"

    @property
    def key_ring_path(self) -> Path:
        """The effective key ring file."""
        return self.key_ring or self.data_dir / "keyring.json"

    @property
    def backup_path(self) -> Path:
        """The effective backup directory."""
        return self.backup_dir or self.data_dir / "backups"

    @property
    def erasure_ledger_path(self) -> Path:
        """The erasure ledger, kept with the key ring (crypto/ledger.py)."""
        return self.key_ring_path.with_name("erasure-ledger.jsonl")

    @property
    def pseudonym_key_path(self) -> Path:
        """The pseudonym key of the retention's archives (privacy/pseudonym.py)."""
        return self.pseudonym_key or self.key_ring_path.with_name("pseudonym.key")

    @property
    def data_keys_path(self) -> Path:
        """The wrapped data keys: their own file, never part of a store or its backups."""
        return self.data_dir / "datakeys.db"

    @property
    def auth_url(self) -> str:
        """Where the authorization server's endpoints live: `<origin>/auth`."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}/auth"

    @property
    def base_path(self) -> str:
        """The URL path of the FHIR endpoint, e.g. '/fhir'."""
        return urlsplit(self.base_url).path.rstrip("/")
