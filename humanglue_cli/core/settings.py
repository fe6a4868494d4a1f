"""Settings, resolved flag > environment > config file > default (CONTRACT §2).

Resolving reads every source but validates nothing: each setting is checked when it is used,
and its error names where the bad value came from. So a mistyped retention breaks
`maintenance cleanup`, not `notifications list`. `child_env()` hands every resolved value to
the processes we start (the Celery worker and beat), which resolve the same settings again.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from humanglue_cli.core import timeutil, urls
from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.text import shown

# setting -> its environment variable (the config file key is the setting's name).
ENVIRONMENT = {
    "database_url": "HUMANGLUE_DATABASE_URL",
    "broker_url": "HUMANGLUE_BROKER_URL",
    "user": "HUMANGLUE_USER",
    "notification_retention": "HUMANGLUE_NOTIFICATION_RETENTION",
    "presence_retention": "HUMANGLUE_PRESENCE_RETENTION",
    "presence_timeout": "HUMANGLUE_PRESENCE_TIMEOUT",
    "tz": "HUMANGLUE_TZ",
    "broadcast_rate": "HUMANGLUE_BROADCAST_RATE",
    "cleanup_schedule": "HUMANGLUE_CLEANUP_SCHEDULE",
    "presence_sweep_schedule": "HUMANGLUE_PRESENCE_SWEEP_SCHEDULE",
    "schedule_tz": "HUMANGLUE_SCHEDULE_TZ",
}
FLAGS = {
    "database_url": "--database-url",
    "broker_url": "--broker-url",
    "user": "--user",
    "tz": "--tz",
    "presence_timeout": "--presence-timeout",
}
CONFIG_ENV = "HUMANGLUE_CONFIG"
RETENTION_MINIMUM = {
    "notification_retention": timedelta(days=1),
    "presence_retention": timedelta(hours=1),
}
RETENTION_DEFAULT = {"notification_retention": "30d", "presence_retention": "24h"}
# Cron expressions of the scheduled jobs and their zone (checked by core/schedule.py).
SCHEDULE_DEFAULT = {
    "cleanup_schedule": "17 3 * * *",
    "presence_sweep_schedule": "* * * * *",
    "schedule_tz": "UTC",
}
PRESENCE_TIMEOUT = ("60s", timedelta(seconds=1))  # default, minimum (CONTRACT §8)
BROADCAST_RATE = (30, 1, 10_000)  # default, minimum, maximum: broadcasts a minute per sender


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "humanglue"


def default_database_path() -> Path:
    return data_dir() / "humanglue.db"


def default_database_url() -> str:
    return f"sqlite:///{default_database_path()}"


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "humanglue" / "config.toml"


@dataclass(frozen=True)
class Value:
    """A setting as given, and where it came from (for error messages)."""

    text: str
    source: str


@dataclass(frozen=True)
class Settings:
    """Every setting as resolved; each is validated on first use."""

    values: dict[str, Value] = field(default_factory=dict)
    config_path: Path | None = None
    config_explicit: bool = False

    def _get(self, name: str) -> Value | None:
        return self.values.get(name)

    @functools.cached_property
    def database_url(self) -> str:
        given = self._get("database_url")
        if given is None:
            return default_database_url()
        return urls.database_url(given.text, given.source)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @functools.cached_property
    def broker_url(self) -> str | None:
        given = self._get("broker_url")
        return urls.broker_url(given.text, given.source) if given else None

    @property
    def user(self) -> str | None:
        given = self._get("user")
        return given.text if given else None

    @property
    def tz(self) -> str | None:
        given = self._get("tz")
        return given.text if given else None

    @functools.cached_property
    def notification_retention(self) -> timedelta:
        return self._retention("notification_retention")

    @functools.cached_property
    def presence_retention(self) -> timedelta:
        return self._retention("presence_retention")

    @functools.cached_property
    def presence_timeout(self) -> timedelta:
        """A device is online while it beat within this long (CONTRACT §8): 1s or more."""
        default, minimum = PRESENCE_TIMEOUT
        given = self._get("presence_timeout") or Value(default, "default")
        duration = timeutil.parse_duration(given.text, given.source)
        if duration < minimum:
            raise BadInput(
                f"{given.source}: a presence timeout of {shown(given.text)} is under "
                f"the minimum of {timeutil.exact(minimum)}"
            )
        return duration

    @functools.cached_property
    def broadcast_rate(self) -> int:
        """Broadcasts a sender may send a minute: a whole number, 1 to 10,000."""
        default, low, high = BROADCAST_RATE
        given = self._get("broadcast_rate")
        if given is None:
            return default
        text = given.text.strip().removesuffix("/min").removesuffix("/m")
        if not text.isdigit() or not low <= int(text) <= high:
            raise BadInput(
                f"{given.source}: a broadcast rate is a number of broadcasts a minute, "
                f"{low} to {high:,}, not {shown(given.text)}"
            )
        return int(text)

    def schedule_setting(self, name: str) -> Value:
        """A schedule setting as given (or its default); core/schedule.py checks it."""
        return self._get(name) or Value(SCHEDULE_DEFAULT[name], "default")

    def _retention(self, name: str) -> timedelta:
        given = self._get(name) or Value(RETENTION_DEFAULT[name], "default")
        duration = timeutil.parse_duration(given.text, given.source)
        minimum = RETENTION_MINIMUM[name]
        if duration < minimum:
            raise BadInput(
                f"{given.source}: a {name.replace('_', ' ')} of {shown(given.text)} is under "
                f"the minimum of {timeutil.exact(minimum)}"
            )
        return duration

    def child_env(self) -> dict[str, str]:
        """The environment that makes a child process resolve these same settings."""
        env = {ENVIRONMENT[name]: value.text for name, value in self.values.items()}
        if self.config_path is not None and (self.config_explicit or self.config_path.exists()):
            env[CONFIG_ENV] = str(self.config_path)
        return env


def _read_config(path: Path, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise BadInput(f"config file not found: {path}")
        return {}
    import tomllib  # only when there is a file to read

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(ENVIRONMENT))
    if unknown:
        raise BadInput(
            f"unknown setting {shown(unknown[0])} in {path} (known: {', '.join(ENVIRONMENT)})"
        )
    return data


def _checked_text(value: object, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadInput(f"{source}: expected text, not {shown(value)}")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{source}: {shown(text)} is not valid UTF-8") from None
    if "\x00" in text:  # only a config file can hold one ("\u0000"); no database stores it
        raise BadInput(f"{source}: {shown(text)} contains a NUL character")
    return text


def load_settings(**flags: str | None) -> Settings:
    """Resolve every setting: flag > environment > config file > default.

    Args:
        **flags: command-line values by setting name (`config` names the config file);
            None means "not given".
    """
    config_flag = flags.pop("config", None)
    config_given = config_flag or os.environ.get(CONFIG_ENV)
    config_path = Path(config_given) if config_given else default_config_path()
    config = _read_config(config_path, explicit=bool(config_given))
    values: dict[str, Value] = {}
    for name, env in ENVIRONMENT.items():
        candidates = (
            (flags.get(name), FLAGS.get(name, name)),
            (os.environ.get(env), env),
            (config.get(name), f"{name} in {config_path}"),
        )
        for raw, source in candidates:
            if raw is not None and raw != "":
                values[name] = Value(_checked_text(raw, source), source)
                break
    return Settings(values, config_path, bool(config_given))
