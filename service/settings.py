"""Service settings: one object, read from the environment (prefix HEADSTART_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from extractor.errors import HeadstartError
from extractor.workers import most_workers
from service.decoding import default_threads


class Settings(BaseSettings):
    """Every knob of the service; `HEADSTART_<NAME>` sets one."""

    model_config = SettingsConfigDict(env_prefix="HEADSTART_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".headstart")
    data_root: Path = Field(default_factory=Path.cwd)  # the folder `serve` runs in; the container sets /data
    api_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: str = "auto"
    engine: Literal["local", "ray"] = "local"  # where extract jobs run (ray: the cluster at ray_address)
    ray_address: str | None = None  # the Ray head, host:port; none: a local Ray cluster started by the service
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_json_bytes: int = Field(1024 * 1024, gt=0)
    max_files: int = Field(16, ge=1)
    max_pixels: int = Field(64_000_000, ge=1)  # images of datasets (extract jobs)
    max_upload_pixels: int = Field(40_000_000, ge=1)  # images sent to /predict
    decode_memory_mb: int = Field(1024, ge=16)  # what decoding uploads may hold at once, over all requests
    decode_threads: int = Field(default_factory=default_threads, ge=1)
    predict_max_batch: int = Field(16, ge=1)
    predict_max_wait_ms: float = Field(5.0, ge=0)
    backbone_cache: int = Field(2, ge=1)
    head_cache: int = Field(16, ge=1)
    extract_batch_size: int = Field(32, ge=1)
    extract_workers: int | None = Field(None, ge=0, le=most_workers())  # decoding processes per job
    flush_seconds: float = Field(10.0, gt=0)
    resume_interrupted: bool = True
    shutdown_grace_s: float = Field(30.0, ge=0)
    # jobs: at most this many queued (more get 429); finished ones are deleted after this many days
    max_queued_jobs: int = Field(1000, ge=1)
    job_retention_days: float = Field(14.0, gt=0)
    # training caps: what one request may ask (larger ones are refused with 422), and wall time per training
    max_epochs: int = Field(1000, ge=1)
    max_hidden_width: int = Field(4096, ge=1)
    max_hidden_layers: int = Field(4, ge=1)
    max_finetune_batch: int = Field(256, ge=1)  # fine-tuning: batch size (epochs: HEADSTART_MAX_EPOCHS)
    finetune_max_seconds: float = Field(86400.0, gt=0)  # a fine-tuning job still running after this stops
    train_max_seconds: float = Field(3600.0, gt=0)
    extract_max_seconds: float = Field(0.0, ge=0)  # 0: no limit (a big dataset takes as long as it takes)
    # connections (uvicorn): idle keep-alive connections close after this; at most this many at once (more get
    # 503); the listen backlog. Header and body read timeouts belong to a reverse proxy in front (README).
    timeout_keep_alive_s: int = Field(5, ge=1, le=600)
    limit_concurrency: int = Field(256, ge=1)
    backlog: int = Field(512, ge=1)


def load_settings(**overrides) -> Settings:
    """Settings from the environment and `overrides` (command-line options); a bad value is one line naming
    the option or the environment variable it came from."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = "_".join(map(str, e["loc"]))
            name = f"--{field.replace('_', '-')}" if field in overrides else f"HEADSTART_{field.upper()}"
            problems.append(f"{name}={e['input']!r}: {e['msg']}")
        raise HeadstartError(f"bad setting {'; '.join(problems)}; fix the option or the environment variable") \
            from None
