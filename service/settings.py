"""Service settings: one object, read from the environment (prefix HEADSTART_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; `HEADSTART_<NAME>` sets one."""

    model_config = SettingsConfigDict(env_prefix="HEADSTART_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".headstart")
    data_root: Path = Field(default_factory=lambda: Path("/data"))
    api_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    max_upload_bytes: int = 20 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    max_files: int = 16
    max_pixels: int = 64_000_000
    predict_max_batch: int = 16
    predict_max_wait_ms: float = 5.0
    backbone_cache: int = 2
    head_cache: int = 16
    extract_batch_size: int = 32
    extract_workers: int | None = None
    flush_seconds: float = 10.0
    resume_interrupted: bool = True
    shutdown_grace_s: float = 30.0
