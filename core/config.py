"""One typed settings object for the whole application.

Every value comes from an environment variable (prefix ``CXR_``; the database also honours the
conventional ``DATABASE_URL``) with a default that runs the product on an embedded SQLite file.
Pages and core modules call :func:`get_settings` and never read ``os.environ`` themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting has a value the application cannot run with."""


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


@dataclass(frozen=True)
class Settings:
    """Application settings; build with :meth:`from_env`."""

    database_url: str
    var_dir: Path
    data_dir: Path
    shared_data_dir: Path
    models_dir: Path
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    # failed logins from one client (address), any accounts, within lockout_minutes before it must wait
    client_lockout_attempts: int = 20
    session_idle_minutes: int = 30
    max_upload_mb: int = 50
    max_image_pixels: int = 50_000_000
    # key of the export's patient_key HMAC; empty: a secret generated once in var_dir/site-secret (0600)
    site_secret: str = ""
    # the deployment's name, printed on reports
    site_name: str = "Emergency Department"
    # DICOMweb base URL of the hospital's PACS (e.g. http://127.0.0.1:8042/dicom-web); empty: no PACS
    pacs_url: str = ""
    # IANA time zone the screens show times in (times are stored in UTC)
    timezone: str = "UTC"

    @classmethod
    def from_env(cls) -> Settings:
        var_dir = _env_path("CXR_VAR_DIR", PROJECT_ROOT / "var")
        database_url = os.environ.get("CXR_DATABASE_URL") or os.environ.get("DATABASE_URL")
        if not database_url:
            database_url = f"sqlite:///{var_dir / 'cxr.db'}"
        settings = cls(
            database_url=database_url,
            var_dir=var_dir,
            data_dir=_env_path("CXR_DATA_DIR", var_dir / "data"),
            shared_data_dir=_env_path("CXR_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"),
            models_dir=_env_path("CXR_MODELS_DIR", PROJECT_ROOT / "models"),
            lockout_attempts=_env_int("CXR_LOCKOUT_ATTEMPTS", 5, minimum=1),
            lockout_minutes=_env_int("CXR_LOCKOUT_MINUTES", 15, minimum=0),
            client_lockout_attempts=_env_int("CXR_CLIENT_LOCKOUT_ATTEMPTS", 20, minimum=1),
            session_idle_minutes=_env_int("CXR_SESSION_IDLE_MINUTES", 30, minimum=1),
            max_upload_mb=_env_int("CXR_MAX_UPLOAD_MB", 50, minimum=1),
            max_image_pixels=_env_int("CXR_MAX_IMAGE_PIXELS", 50_000_000, minimum=1),
            site_secret=os.environ.get("CXR_SITE_SECRET", ""),
            site_name=os.environ.get("CXR_SITE_NAME", "").strip()[:80] or "Emergency Department",
            pacs_url=os.environ.get("CXR_PACS_URL", "").strip().rstrip("/"),
            timezone=os.environ.get("CXR_TIMEZONE", "").strip() or "UTC",
        )
        if not settings.database_url.startswith(("sqlite", "postgresql")):
            raise SettingsError(
                "DATABASE_URL must be a SQLAlchemy URL for SQLite or PostgreSQL, "
                f"got {settings.database_url.split(':', 1)[0]!r}"
            )
        try:
            ZoneInfo(settings.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise SettingsError(
                f"CXR_TIMEZONE must be an IANA time zone such as Europe/Berlin, got {settings.timezone!r}"
            ) from None
        return settings

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg 3 driver named for plain ``postgresql://`` URLs."""
        url = self.database_url
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url[len("postgresql://") :]
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
