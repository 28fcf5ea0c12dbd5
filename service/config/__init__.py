"""One Settings object. ``settings_from(mapping)`` reads the mapping alone (what
``create_app(mapping)`` uses: the environment is not read at all); ``load_settings()`` reads
the environment, then any overrides (``create_app()`` without a mapping, the CLI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .auth import OAuthIssuer, api_auth, oauth_issuers, server_auth
from .values import ConfigError, json_object
from .watch import watch_settings

DEFAULT_DATABASE_URL = "sqlite:///var/baclofen-check.sqlite3"
DEFAULT_SPOOL_DIR = "var/spool"




def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _int(name: str, value: Any, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from exc
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return number


def _float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from exc
    if not 0 < number < 600:
        raise ConfigError(f"{name} must be between 0 and 600 seconds")
    return number


def _hours(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number of hours, not {value!r}") from exc
    if not 0 <= number <= 24 * 365:
        raise ConfigError(f"{name} must be between 0 and 8760 hours")
    return number


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        items = str(value or "").split(",")
    return tuple(item.strip() for item in items if item.strip())


def _size(name: str, value: Any) -> int:
    text = str(value).strip().upper()
    factors = {"KB": 1000, "MB": 1000**2, "GB": 1000**3, "K": 1000, "M": 1000**2}
    for suffix, factor in factors.items():
        if text.endswith(suffix):
            try:
                return int(float(text[: -len(suffix)].strip()) * factor)
            except ValueError as exc:
                raise ConfigError(f"{name} must be a size such as 5MB, not {value!r}") from exc
    return _int(name, text)


CLIENT_STYLES = ("standard", "epic")
ISSUER_FIELDS = frozenset({"jwks_url", "jwks_file", "max_lifetime_s", "style"})
DEFAULT_MAX_LIFETIME_S = 300
# choice: a token living longer than an hour is not a per-call token; such a setting is a typo.
MAX_ISSUER_LIFETIME_S = 3600


@dataclass(frozen=True)
class TrustedIssuer:
    """One entry of CDS_TRUSTED_ISSUERS. A ``jku`` header must equal ``jwks_url``; keys come
    from ``jwks_file`` when given (nothing is fetched), else from ``jwks_url``. ``style`` is
    the card style for this issuer's calls (None: CDS_CLIENT_STYLE)."""

    jwks_url: str | None = None
    jwks_file: str | None = None
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S
    style: str | None = None


def _is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def trusted_issuer(issuer: str, value: Any) -> TrustedIssuer:
    """A string (a JWKS URL or a JWKS file path) or an object with ISSUER_FIELDS."""
    where = f"CDS_TRUSTED_ISSUERS[{issuer!r}]"
    if isinstance(value, TrustedIssuer):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return TrustedIssuer(jwks_url=text) if _is_url(text) else TrustedIssuer(jwks_file=text)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a JWKS URL, a JWKS file path or an object")
    unknown = sorted(set(value) - ISSUER_FIELDS)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(unknown)} (allowed: "
                          f"{', '.join(sorted(ISSUER_FIELDS))})")
    url, path, style = value.get("jwks_url"), value.get("jwks_file"), value.get("style")
    if url is not None and not (isinstance(url, str) and _is_url(url)):
        raise ConfigError(f"{where}.jwks_url must be an http(s) URL")
    if path is not None and not (isinstance(path, str) and path.strip()):
        raise ConfigError(f"{where}.jwks_file must be a file path")
    if url is None and path is None:
        raise ConfigError(f"{where} needs jwks_url or jwks_file")
    if style is not None and style not in CLIENT_STYLES:
        raise ConfigError(f"{where}.style must be one of {', '.join(CLIENT_STYLES)}")
    lifetime = value.get("max_lifetime_s", DEFAULT_MAX_LIFETIME_S)
    if isinstance(lifetime, bool):
        raise ConfigError(f"{where}.max_lifetime_s must be a whole number of seconds")
    seconds = _int(f"{where}.max_lifetime_s", lifetime)
    if seconds > MAX_ISSUER_LIFETIME_S:
        raise ConfigError(f"{where}.max_lifetime_s must be at most {MAX_ISSUER_LIFETIME_S}")
    return TrustedIssuer(jwks_url=url, jwks_file=path.strip() if path else None,
                         max_lifetime_s=seconds, style=style)


def _issuers(value: Any) -> dict[str, TrustedIssuer]:
    data = json_object("CDS_TRUSTED_ISSUERS", value)
    return {k: trusted_issuer(k, v) for k, v in data.items()}


def _style(value: Any) -> str:
    text = str(value or "standard").strip().lower()
    if text not in CLIENT_STYLES:
        raise ConfigError(f"CDS_CLIENT_STYLE must be one of {', '.join(CLIENT_STYLES)}")
    return text


@dataclass(frozen=True)
class Settings:
    profile: str = "us"
    database_url: str = DEFAULT_DATABASE_URL
    audit_retention_days: int = 365
    fhir_server_url: str | None = None
    fhir_server_token: str | None = field(default=None, repr=False)
    fhir_server_auth: str = "none"  # none | bearer | smart-backend (service/outbound/)
    smart_client_id: str | None = None
    smart_private_keys: str | None = None
    smart_scope: str = ""
    smart_token_url: str | None = None
    fhir_allowlist: tuple[str, ...] = ()
    public_base_url: str = "http://127.0.0.1:8080"
    api_require_auth: bool = True
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    api_auth: str = "tokens"  # tokens | oauth | both (service/web/auth.py)
    oauth_issuers: Mapping[str, OAuthIssuer] = field(default_factory=dict)
    cds_require_jwt: bool = True
    cds_trusted_issuers: Mapping[str, TrustedIssuer] = field(default_factory=dict)
    cds_client_style: str = "standard"
    cds_repeat_after_h: float = 24.0
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 5 * 1000 * 1000
    max_batch_lines: int = 10000
    outbound_timeout_s: float = 2.0
    request_read_timeout_s: float = 10.0
    max_batch_bytes: int = 100 * 1000 * 1000
    db_connect_timeout_s: float = 3.0
    db_statement_timeout_s: float = 5.0
    spool_dir: str = "var/spool"
    spool_max_bytes: int = 100 * 1000 * 1000
    watch_notify_token: str | None = field(default=None, repr=False)  # service/watch/
    watch_coalesce_s: float = 30.0
    watch_check_s: float = 60.0
    watch_notify_hmac_secret: str | None = field(default=None, repr=False)  # service/watch/
    watch_task_owner: str | None = None
    testing: bool = False

    @property
    def read_tokens(self) -> frozenset[str]:
        return frozenset(t.removesuffix(":write") for t in self.api_tokens)

    @property
    def write_tokens(self) -> frozenset[str]:
        return frozenset(t.removesuffix(":write") for t in self.api_tokens if t.endswith(":write"))


NAMES = (
    "BACLOFEN_PROFILE",
    "DATABASE_URL",
    "AUDIT_RETENTION_DAYS",
    "FHIR_SERVER_URL",
    "FHIR_SERVER_TOKEN",
    "FHIR_SERVER_AUTH",
    "SMART_CLIENT_ID",
    "SMART_PRIVATE_KEYS",
    "SMART_SCOPE",
    "SMART_TOKEN_URL",
    "FHIR_ALLOWLIST",
    "PUBLIC_BASE_URL",
    "API_REQUIRE_AUTH",
    "API_TOKENS",
    "API_AUTH",
    "OAUTH_ISSUERS",
    "CDS_REQUIRE_JWT",
    "CDS_TRUSTED_ISSUERS",
    "CDS_CLIENT_STYLE",
    "CDS_REPEAT_AFTER_H",
    "CORS_ORIGINS",
    "MAX_REQUEST_BYTES",
    "MAX_BATCH_LINES",
    "OUTBOUND_TIMEOUT_S",
    "REQUEST_READ_TIMEOUT_S",
    "MAX_BATCH_BYTES",
    "DB_CONNECT_TIMEOUT_S",
    "DB_STATEMENT_TIMEOUT_S",
    "SPOOL_DIR",
    "SPOOL_MAX_BYTES",
    "WATCH_NOTIFY_TOKEN",
    "WATCH_COALESCE_S",
    "WATCH_CHECK_S",
    "WATCH_NOTIFY_HMAC_SECRET",
    "WATCH_TASK_OWNER",
    "TESTING",
)


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings: the environment (``environ``, else os.environ) first, then the
    overrides, which win."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {name: env[name] for name in NAMES if name in env}
    raw.update(_given(overrides or {}))
    return _settings(raw)


def settings_from(mapping: Mapping[str, Any]) -> Settings:
    """The settings of ``mapping`` alone, the names of NAMES (values as strings or native
    values; None: not given); nothing is read from the environment."""
    return _settings(_given(mapping))


def _given(mapping: Mapping[str, Any]) -> dict[str, Any]:
    unknown = [k for k in mapping if k not in NAMES]
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return {k: v for k, v in mapping.items() if v is not None}


def _settings(raw: Mapping[str, Any]) -> Settings:
    profile = str(raw.get("BACLOFEN_PROFILE", "us")).strip().lower()
    if profile not in {"us", "uk"}:
        raise ConfigError("BACLOFEN_PROFILE must be us or uk")
    fhir_url = str(raw["FHIR_SERVER_URL"]).rstrip("/") if raw.get("FHIR_SERVER_URL") else None
    outbound_auth = server_auth(raw, fhir_url)
    oauth = oauth_issuers(raw.get("OAUTH_ISSUERS", "{}"))
    allow = _list(raw.get("FHIR_ALLOWLIST", ""))
    if not allow and fhir_url:
        token_url = outbound_auth["smart_token_url"]
        allow = (fhir_url, token_url) if token_url else (fhir_url,)
    return Settings(
        profile=profile,
        database_url=str(raw.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        audit_retention_days=_int("AUDIT_RETENTION_DAYS", raw.get("AUDIT_RETENTION_DAYS", 365)),
        fhir_server_url=fhir_url,
        fhir_server_token=str(raw["FHIR_SERVER_TOKEN"]) if raw.get("FHIR_SERVER_TOKEN") else None,
        fhir_allowlist=allow,
        **outbound_auth,
        public_base_url=str(raw.get("PUBLIC_BASE_URL", "http://127.0.0.1:8080")).rstrip("/"),
        api_require_auth=_bool("API_REQUIRE_AUTH", raw.get("API_REQUIRE_AUTH", True)),
        api_tokens=_list(raw.get("API_TOKENS", "")),
        api_auth=api_auth(raw.get("API_AUTH"), oauth),
        oauth_issuers=oauth,
        cds_require_jwt=_bool("CDS_REQUIRE_JWT", raw.get("CDS_REQUIRE_JWT", True)),
        cds_trusted_issuers=_issuers(raw.get("CDS_TRUSTED_ISSUERS", "{}")),
        cds_client_style=_style(raw.get("CDS_CLIENT_STYLE", "standard")),
        cds_repeat_after_h=_hours("CDS_REPEAT_AFTER_H", raw.get("CDS_REPEAT_AFTER_H", 24)),
        cors_origins=_list(raw.get("CORS_ORIGINS", "")),
        max_request_bytes=_size("MAX_REQUEST_BYTES", raw.get("MAX_REQUEST_BYTES", 5_000_000)),
        max_batch_lines=_int("MAX_BATCH_LINES", raw.get("MAX_BATCH_LINES", 10000)),
        outbound_timeout_s=_float("OUTBOUND_TIMEOUT_S", raw.get("OUTBOUND_TIMEOUT_S", 2)),
        request_read_timeout_s=_float("REQUEST_READ_TIMEOUT_S",
                                      raw.get("REQUEST_READ_TIMEOUT_S", 10)),
        max_batch_bytes=_size("MAX_BATCH_BYTES", raw.get("MAX_BATCH_BYTES", 100_000_000)),
        db_connect_timeout_s=_float("DB_CONNECT_TIMEOUT_S", raw.get("DB_CONNECT_TIMEOUT_S", 3)),
        db_statement_timeout_s=_float("DB_STATEMENT_TIMEOUT_S",
                                      raw.get("DB_STATEMENT_TIMEOUT_S", 5)),
        spool_dir=str(raw.get("SPOOL_DIR") or DEFAULT_SPOOL_DIR),
        spool_max_bytes=_size("SPOOL_MAX_BYTES", raw.get("SPOOL_MAX_BYTES", 100_000_000)),
        **watch_settings(raw),
        testing=_bool("TESTING", raw.get("TESTING", False)),
    )
