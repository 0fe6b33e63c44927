"""Settings: settings.toml, then SOUNDSPAN_* environment variables, validated against schemas.

The host's own keys sit at the top level of settings.toml; each plugin owns one `[section]`
and declares its defaults and types beside its code (soundspan_settings hook). Anything
unknown or mistyped stops start-up with one line that names it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from dynaconf import Dynaconf
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from soundspan_hooks import PluginSettings, SettingsSection
from soundspan_host.errors import ConfigError
from soundspan_host.queue import QueuePolicy

ENV_PREFIX = "SOUNDSPAN"
SETTINGS_FILE_ENV = "SOUNDSPAN_SETTINGS_FILE"
# never echoed in an error: the token itself, and a URL that may carry a password
SECRET_KEYS = frozenset({"api_token", "database_url"})
# a plugin's key that by its name may hold a secret: password, api_key, token, secret...
SECRET_NAME = re.compile(r"pass|secret|token|key|credential")


class HostSettings(BaseModel):
    """The host's own settings: where things live and where it listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(3030, ge=0, le=65535, description="Port of the HTTP API.")
    music_dir: Path = Field(Path("music"), description="The music library to index.")
    data_dir: Path = Field(
        Path("data"), description="Embedded database, model cache and other state."
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL (with pgvector). Unset: an embedded server under data_dir.",
    )
    embedded_database_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port the embedded PostgreSQL opens at 127.0.0.1 for workers (password in "
        "data_dir/database-password); 0: none, the host uses a private Unix socket.",
    )
    embedded_database_shared_buffers_mb: Literal["auto"] | Annotated[int, Field(ge=16)] = Field(
        "auto",
        description="Megabytes the embedded PostgreSQL keeps as its page cache (shared_buffers). "
        "auto: an eighth of the memory the host may use (a container's limit), 128 MB to 2 GB; "
        "searches in a large library read their index from it.",
    )
    api_token: str | None = Field(
        None,
        min_length=16,
        description="Clients send it as `Authorization: Bearer <token>`. Unset: the host makes "
        "one in data_dir/api-token (0600), which the CLI reads; required to bind beyond "
        "loopback.",
    )
    trust_local_accounts: bool = Field(
        False,
        description="true: on loopback the API asks for no token, so every account on this "
        "machine may use it (and the music server accounts it holds).",
    )
    allowed_hosts: list[str] = Field(
        [],
        description="Names (or addresses) clients may reach the API by, beyond localhost, "
        "127.0.0.1, [::1] and the bound address; any port. `*` allows any. A request for another "
        "Host gets a 421 (DNS rebinding). Bound to 0.0.0.0 or :: and left empty: any name, "
        "since the API token is required there anyway.",
    )
    cors_origins: list[str] = Field(
        [],
        description="Web pages (scheme://host[:port]) on other sites that may call the API from "
        "a browser: they get CORS headers and may change state. Empty: CORS is off, and a "
        "browser request from another site that changes state gets a 403.",
    )
    http_idle_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers, counted from "
        "its opening or from the previous answer; then it is closed (idle or slow clients).",
    )
    http_body_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send a request's body (408 after)."
    )
    http_max_connections: int = Field(
        256,
        ge=1,
        description="Open HTTP connections at most; more are answered 503 and closed.",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line, for log collectors."
    )
    analysis_max_attempts: int = Field(
        3, ge=1, description="Attempts at analyzing a track before its job is marked failed."
    )
    analysis_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A job whose worker has not renewed it for this long is taken over.",
    )
    analysis_retry_delay_seconds: float = Field(
        30.0, ge=0, description="Pause before a failed attempt is retried; doubles each time."
    )
    analysis_deadline_seconds: float = Field(
        300.0,
        gt=0,
        description="Time any analysis may take before its worker process is stopped (a hung "
        "read or decode); the attempt then fails and is retried.",
    )
    analysis_deadline_seconds_per_audio_minute: float = Field(
        60.0,
        ge=0,
        description="More time allowed per minute of the track's audio (up to 3 hours of it).",
    )
    missing_track_grace_days: float = Field(
        30.0,
        ge=0,
        description="A track whose file is gone this long is forgotten with its analyses.",
    )
    settings_file: Path | None = Field(
        None,
        description="Another settings.toml to read instead of ./settings.toml; only the "
        "environment variable sets it.",
    )

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def comma_separated(cls, value: Any) -> Any:
        """An environment variable may list them as `a,b`; settings.toml as a TOML list."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def queue_policy(self) -> QueuePolicy:
        return QueuePolicy(
            lease_seconds=self.analysis_lease_seconds,
            max_attempts=self.analysis_max_attempts,
            retry_delay_seconds=self.analysis_retry_delay_seconds,
            deadline_seconds=self.analysis_deadline_seconds,
            deadline_seconds_per_audio_minute=self.analysis_deadline_seconds_per_audio_minute,
        )


@dataclass(frozen=True)
class RawSettings:
    """Settings as read, before any schema: host keys and one dict per plugin section."""

    host: dict[str, Any]
    sections: dict[str, dict[str, Any]]
    source: Path | None


@dataclass(frozen=True)
class Settings:
    """Validated settings: the host's, and each known plugin's section."""

    host: HostSettings
    sections: Mapping[str, PluginSettings] = field(default_factory=dict)

    def section(self, name: str) -> PluginSettings:
        return self.sections[name]


def default_settings_file() -> Path | None:
    """settings.toml from SOUNDSPAN_SETTINGS_FILE, the working dir, or the source checkout."""
    if explicit := os.environ.get(SETTINGS_FILE_ENV):
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"settings file {path} ({SETTINGS_FILE_ENV}) does not exist")
        return path
    for candidate in (Path.cwd() / "settings.toml", Path(__file__).parent.parent / "settings.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_settings(settings_file: Path | None = None) -> RawSettings:
    """Merge settings.toml with SOUNDSPAN_* env vars (nested with `__`, values parsed as TOML)."""
    source = settings_file or default_settings_file()
    try:
        loaded = Dynaconf(
            envvar_prefix=ENV_PREFIX,
            settings_files=[str(source)] if source else [],
            environments=False,
            merge_enabled=True,
        ).as_dict()
    except Exception as error:  # dynaconf raises toml and parse errors of many kinds
        raise ConfigError(f"cannot read settings ({source or 'environment'}): {error}") from error
    host: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in _lowercase_keys(loaded).items():
        if isinstance(value, dict):
            sections[key] = value
        else:
            host[key] = value
    host.pop("settings_file", None)
    return RawSettings(host=host, sections=sections, source=source)


def validate_settings(raw: RawSettings, declared: list[SettingsSection]) -> Settings:
    """Check every key against the host's and the plugins' schemas; ConfigError if one is off."""
    by_name = {section.name: section for section in declared}
    unknown = sorted(set(raw.sections) - set(by_name))
    if unknown:
        known = ", ".join(sorted(by_name)) or "none"
        raise ConfigError(f"unknown plugin [{unknown[0]}] in settings (known plugins: {known})")
    host = _validated(HostSettings, {**raw.host, "settings_file": raw.source}, where="")
    sections = {
        name: _validated(
            section.model,
            {**raw.sections.get(name, {}), **legacy_env_values(section)},
            where=name,
        )
        for name, section in by_name.items()
    }
    return Settings(host=host, sections=sections)


def legacy_env_values(section: SettingsSection) -> dict[str, str]:
    """Values set through a field's unprefixed env var, e.g. CLAP_WORKERS for [clap] workers.

    They beat settings.toml and lose to the prefixed variable (SOUNDSPAN_CLAP__WORKERS).
    """
    values = {}
    for name, info in section.model.model_fields.items():
        legacy = legacy_env_name(info)
        if legacy and legacy in os.environ and env_name(name, section.name) not in os.environ:
            values[name] = os.environ[legacy]
    return values


def env_name(key: str, section: str | None = None) -> str:
    """The variable that sets a key: SOUNDSPAN_PORT, or SOUNDSPAN_CLAP__WORKERS in a section."""
    return f"{ENV_PREFIX}_{section}__{key}".upper() if section else f"{ENV_PREFIX}_{key}".upper()


def legacy_env_name(info: FieldInfo) -> str | None:
    """The older unprefixed variable a plugin's setting also answers to (`legacy_env`), if any."""
    extra = info.json_schema_extra
    return extra.get("env") if isinstance(extra, dict) else None


def _validated(model: type[BaseModel], values: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"])
            shown = f"[{where}] {key}".strip() if where else key
            if problem["type"] == "extra_forbidden":
                problems.append(f"unknown setting {shown}")
            elif not where and str(problem["loc"][0]) in SECRET_KEYS:
                problems.append(
                    f"bad setting {shown} (value hidden): {problem['msg']}; from the environment, "
                    "a value such as 1234 is read as a number: quote it, e.g. "
                    f"{env_name(key)}='\"…\"'"
                )
            elif _may_hold_a_secret(model, problem["loc"], problem["input"]):
                problems.append(f"bad setting {shown} (value hidden): {problem['msg']}")
            else:
                problems.append(f"bad setting {shown} = {problem['input']!r}: {problem['msg']}")
        raise ConfigError("; ".join(problems)) from None


def _may_hold_a_secret(model: type[BaseModel], location: tuple, value: Any) -> bool:
    """Whether a rejected value could be a secret, so an error must not print it: a whole
    section or entry (a user's password is in it), anything in a user entry, a SecretStr, or a
    key whose name says so."""
    if isinstance(value, Mapping | list | tuple):
        return True
    names = [str(part).lower() for part in location if isinstance(part, str)]
    if any(name == "users" or SECRET_NAME.search(name) for name in names):
        return True
    return _declared_secret(model, location)


def _declared_secret(model: type[BaseModel] | None, location: tuple) -> bool:
    """Whether the field at `location` (through nested models and lists) is a SecretStr."""
    annotation: Any = model
    for part in location:
        if isinstance(part, int):
            continue
        models = [kind for kind in _kinds(annotation) if _is_model(kind)]
        field = next(
            (kind.model_fields.get(part) for kind in models if part in kind.model_fields), None
        )
        if field is None:
            return False
        annotation = field.annotation
    return SecretStr in _kinds(annotation)


def _kinds(annotation: Any) -> set[Any]:
    """Every type an annotation names, through Optional, unions and containers."""
    found = {annotation}
    for argument in get_args(annotation):
        found |= _kinds(argument)
    return found


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _lowercase_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key).lower(): _lowercase_keys(item) for key, item in value.items()}
    return value
