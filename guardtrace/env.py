"""Typed helpers that read settings from the environment and fail loudly on bad values."""

from __future__ import annotations

import os
from pathlib import Path


class ImproperEnv(ValueError):
    """An environment variable holds a value the app cannot use."""


def _raw(name: str) -> str | None:
    # NAME_FILE lets secrets come from a mounted file (Docker/Kubernetes secrets).
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperEnv(f"{name}_FILE={file_path!r}: cannot read: {exc.strerror}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str) -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperEnv(f"{name}={value!r}: expected a boolean (true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperEnv(f"{name}={value!r}: expected an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperEnv(f"{name}={value!r}: must be at least {minimum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperEnv(f"{name}={value!r}: expected a number") from None
    if number != number or (minimum is not None and number < minimum):  # NaN, or below the minimum
        raise ImproperEnv(f"{name}={value!r}: must be a number of at least {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ImproperEnv(f"{name}={value!r}: empty item in comma-separated list")
    return items


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    if value is None or value == "":
        return default
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ImproperEnv(f"{name}={value!r}: expected an absolute path")
    return path
