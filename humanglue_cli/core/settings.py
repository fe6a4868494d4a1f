"""Settings, resolved flag > environment > config file > default (CONTRACT §2)."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from humanglue_cli.core.errors import BadInput

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse `90s`, `15m`, `24h`, `30d` or `2w` into a timedelta.

    Raises:
        BadInput: the text is not such a duration.
    """
    match = _DURATION.match(text or "")
    if not match:
        raise BadInput(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago (`1h`) or an ISO-8601 timestamp (UTC if no offset)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text or ""):
        return now - parse_duration(text)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"not a time: {text!r} (use a duration such as 1h or 7d, or ISO-8601)"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def normalize_database_url(url: str) -> str:
    """SQLAlchemy URL with `postgresql://` meaning psycopg 3 (CONTRACT §2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_database_url() -> str:
    return f"sqlite:///{_xdg('XDG_DATA_HOME', '.local/share') / 'humanglue' / 'humanglue.db'}"


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "humanglue" / "config.toml"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved once per process."""

    database_url: str = field(default_factory=default_database_url)
    broker_url: str | None = None
    user: str | None = None
    config_path: Path | None = None
    notification_retention: timedelta = timedelta(days=30)
    presence_retention: timedelta = timedelta(hours=24)
    tz: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


# setting -> (environment variable, minimum or None)
_ENV = {
    "database_url": "HUMANGLUE_DATABASE_URL",
    "broker_url": "HUMANGLUE_BROKER_URL",
    "user": "HUMANGLUE_USER",
    "notification_retention": "HUMANGLUE_NOTIFICATION_RETENTION",
    "presence_retention": "HUMANGLUE_PRESENCE_RETENTION",
    "tz": "HUMANGLUE_TZ",
}
_MINIMUM = {"notification_retention": timedelta(days=1), "presence_retention": timedelta(hours=1)}


def _read_config(path: Path, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise BadInput(f"config file not found: {path}")
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"cannot read config file {path}: {exc}") from None
    unknown = set(data) - set(_ENV)
    if unknown:
        raise BadInput(f"unknown key in {path}: {', '.join(sorted(unknown))}")
    return data


def load_settings(**flags: str | None) -> Settings:
    """Resolve every setting: flag > environment > config file > default.

    Args:
        **flags: command-line values by setting name (`config` names the config file);
            None means "not given".
    """
    config_flag = flags.pop("config", None) or os.environ.get("HUMANGLUE_CONFIG")
    config_path = Path(config_flag) if config_flag else default_config_path()
    config = _read_config(config_path, explicit=bool(config_flag))
    values: dict[str, Any] = {"config_path": config_path}
    for name, env in _ENV.items():
        raw = flags.get(name) or os.environ.get(env) or config.get(name)
        if raw in (None, ""):
            continue
        if name in _MINIMUM:
            duration = parse_duration(str(raw))
            if duration < _MINIMUM[name]:
                limit = format_duration(_MINIMUM[name])
                raise BadInput(f"{name.replace('_', ' ')} of {raw} is under the minimum of {limit}")
            values[name] = duration
        elif name == "database_url":
            values[name] = normalize_database_url(str(raw))
        else:
            values[name] = str(raw)
    return Settings(**values)
