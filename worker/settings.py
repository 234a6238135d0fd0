"""The one settings object for the service (API processes and workers alike).

Every field reads from an environment variable `STYLEGAN_<FIELD>` (or a `.env` file in the working
directory). With nothing set, the service runs on the embedded default: a SQLite file and an embedded
Redis broker, both under `data_dir`. Fields are grouped by section in the order below; the env names stay
flat (`STYLEGAN_DATABASE_URL`, not `STYLEGAN_DATABASE__URL`) because they are what operators type.

Nothing is read at import: `get_settings()` builds the object once, and it is passed down from there.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.embedded import embedded_broker_url

SQLITE_FILENAME = "stylegan.sqlite3"
# S3's bucket naming rules; the prefix takes the characters storage keys take (worker/storage/keys.py).
_S3_URL = re.compile(
    r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(|[\w][\w.-]*(?:/[\w][\w.-]*)*/?))?", re.ASCII
)


class Settings(BaseSettings):
    """Service configuration; see the README's settings table for each variable."""

    model_config = SettingsConfigDict(
        env_prefix="STYLEGAN_",
        env_file=".env",
        env_file_encoding="utf-8",
        # A .env file is often shared with docker compose (POSTGRES_PASSWORD, ...): other keys are not ours.
        extra="ignore",
        frozen=True,
    )

    # --- storage: everything the embedded default writes lives under this one directory
    data_dir: Path = Path("./data")
    # Where files go: None = data_dir/files on this machine; s3://bucket/prefix = an S3-compatible object
    # store that every host shares (endpoint and credentials from the standard AWS_* variables).
    storage_url: str | None = None
    # Local copies of stored objects that need a path (models, resumed checkpoints); None = data_dir/cache/objects.
    storage_cache_dir: Path | None = None

    # --- database
    # None means a SQLite file under data_dir; PostgreSQL as postgresql+psycopg://user:pw@host/db.
    database_url: str | None = None

    # --- broker
    # None means the embedded Redis started by `stylegan serve` under data_dir/broker.
    broker_url: str | None = None
    # Seconds a publish or a health check waits for the broker before giving up, so a dead broker
    # turns into a quick 503 instead of a hung request.
    broker_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long Redis keeps a delivered, unacknowledged job message before handing it to another worker.
    # A worker lost with its job is found by the lease reconciler long before this, and a redelivered
    # duplicate is dropped at the claim, so this is a backstop; an hour keeps redelivery noise rare.
    broker_visibility_timeout_seconds: float = Field(default=3600.0, gt=0, allow_inf_nan=False)

    # --- auth: comma-separated bearer keys; empty turns auth off (the embedded default)
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()

    # --- limits
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_batch: int = Field(default=64, gt=0)
    max_resolution: int = Field(default=1024, gt=0)
    max_queue_depth: int = Field(default=1000, gt=0)
    # Bodies of routes that take no upload (JSON): counted as they arrive and refused (413) past this,
    # whatever their Content-Type claims. Our largest JSON request (a training job) is under 4 KiB.
    max_json_body_bytes: int = Field(default=1024**2, gt=0)
    # The request line and headers together (414/431 past it): a query string or a header of megabytes
    # is an attack, and the HTTP parser would otherwise buffer all of it before the app sees a byte.
    max_request_head_bytes: int = Field(default=32 * 1024, ge=1024)
    # A client that has not finished its request line and headers this long after starting them, or
    # that sends no body bytes for this long while the body is incomplete, is answered 408 and cut
    # off: each stalled connection holds a socket and a parser (uvicorn itself waits forever).
    request_header_timeout_seconds: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    request_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)

    # --- synchronous sampling (GET /v1/models/{id}/images/..., mix.png; worker/inference/)
    # The inference worker groups concurrent requests for one model into forward passes of at most
    # max_batch rows, waiting at most inference_max_wait_ms after the first request for more to arrive:
    # a few ms cost one request little and let a burst share one pass (on a GPU, 8 images cost about
    # what 1 does).
    inference_max_wait_ms: float = Field(default=10.0, ge=0, le=1000, allow_inf_nan=False)
    # Threads of the inference worker (Celery threads pool); None = max_batch + 2, so that a full batch
    # can wait together while two mix-grid or video jobs run beside it.
    inference_concurrency: int | None = Field(default=None, ge=1, le=1024)
    # Generators kept loaded per inference worker, bounded by count and by their weights' bytes; the
    # least recently used is dropped first.
    inference_cache_models: int = Field(default=4, ge=1)
    inference_cache_bytes: int = Field(default=4 * 1024**3, gt=0)
    # "auto" = CUDA when the worker has it, else CPU.
    inference_device: Literal["auto", "cpu", "cuda"] = "auto"
    # How long an API request waits for the inference worker's answer before a 503.
    sample_timeout_seconds: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False)
    # Per-key token bucket for sampling requests (per API process; auth off = one shared bucket).
    sample_rate_per_second: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    sample_burst: int = Field(default=40, ge=1)
    # Sampling requests one API process waits on at once; more get 503. Each waiting request holds
    # one of the server's 40 worker threads (anyio's default), so this stays well below that.
    sample_max_in_flight: int = Field(default=16, ge=1, le=32)
    # Redis where the sampling rate limit and in-flight cap are counted, so that every API process that
    # names the same Redis enforces one limit (usually the broker's URL); None = counted per process.
    # With it, sample_max_in_flight caps all those processes together.
    limits_redis_url: str | None = None
    # Jobs: frames in one video, cells (rows x columns) in one mix grid.
    video_max_frames: int = Field(default=1200, ge=1)
    mix_grid_max_cells: int = Field(default=256, ge=1)

    # --- jobs
    # A worker holds a job for job_lease_seconds and renews the lease every heartbeat_seconds; a lease
    # that runs out means the worker is gone, and the reconciler re-queues the job (up to
    # job_max_attempts runs in all).
    job_lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    # How often each worker looks for expired leases; None means every heartbeat.
    reconcile_seconds: float | None = Field(default=None, gt=0)

    # --- webhooks: HMAC key for signing outgoing job notifications (None = unsigned)
    webhook_secret: str | None = None

    # --- datasets (POST /v1/datasets) and training jobs
    # Uploads up to this many bytes are prepared within the request (201); larger ones become a
    # `dataset_prepare` job (202). 64 MiB of photos prepare in well under a minute on one core.
    dataset_inline_max_bytes: int = Field(default=64 * 1024**2, ge=0)
    # Limits on what one upload may hold (passed to gan.training.dataset_prepare.PrepareLimits).
    dataset_max_files: int = Field(default=100_000, gt=0)
    dataset_max_file_bytes: int = Field(default=256 * 1024**2, gt=0)
    dataset_max_uncompressed_bytes: int = Field(default=20 * 1024**3, gt=0)
    # PNG and JPEG barely compress; a zip entry shrunk more than this is a bomb.
    dataset_max_compression_ratio: float = Field(default=200.0, ge=1, allow_inf_nan=False)
    dataset_max_image_pixels: int = Field(default=89_478_485, gt=0)  # Pillow's own bomb limit
    dataset_thumbnails: int = Field(default=8, ge=0, le=64)
    # Heavy work done within a request (preparing a small dataset upload, reading an uploaded network
    # file, decoding a projection target): at most this many at once per API process, the rest answered
    # 503 with Retry-After. One 88-megapixel image costs about 0.7 GB while it is decoded and resized, so
    # four at once grew the service by 2.8 GB.
    heavy_max_concurrent: int = Field(default=2, ge=1, le=64)
    heavy_retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    # The SSE stream (GET /v1/jobs/{id}/events) polls the job_events table this often, so it works
    # whichever process or machine wrote the events, and sends a keep-alive comment when idle this long.
    events_poll_seconds: float = Field(default=0.5, gt=0)
    events_keepalive_seconds: float = Field(default=15.0, gt=0)
    # Where training jobs keep their run folders while they train (under data_dir when unset).
    training_dir: Path | None = None

    # --- projections, webhooks, per-key quotas
    # Outgoing requests to user-given URLs (webhooks, URL imports) refuse hosts that resolve to loopback,
    # private, link-local or reserved addresses (see worker/net.py); tests and one-machine setups allow them.
    allow_private_urls: bool = False
    # Webhook deliveries: attempt n waits base * 2**(n-1) seconds after the previous one, capped at max.
    # With the defaults, 8 attempts cover about 21 minutes before the delivery is marked failed.
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_base_delay_seconds: float = Field(default=10.0, gt=0)
    webhook_max_delay_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Per API key, only when api_keys is set (None = no limit): jobs queued or running at once, and the
    # bytes of the key's models, datasets and job artifacts together.
    quota_max_active_jobs: int | None = Field(default=16, ge=1)
    quota_max_storage_bytes: int | None = Field(default=50 * 1024**3, ge=0)
    # Projection (POST /v1/models/{id}/projections): step cap, and limits on the uploaded target image.
    projection_max_steps: int = Field(default=5000, ge=1)
    projection_max_image_bytes: int = Field(default=64 * 1024**2, gt=0)
    projection_max_image_pixels: int = Field(default=4096 * 4096, gt=0)
    # The perceptual distance: NVIDIA's VGG16 LPIPS file (vgg16_path if set, else vgg16_url, downloaded
    # once into data_dir/cache/detectors and checked against vgg16_sha256 when given), or "simple", a
    # fixed random-filter stand-in (gan.perceptual.SimpleFeatureDistance) for tests and offline use whose
    # projections are visibly blurrier.
    projection_distance: Literal["vgg16", "simple"] = "vgg16"
    vgg16_path: Path | None = None
    vgg16_url: str = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"
    vgg16_sha256: str | None = None

    # --- model import (POST /v1/models)
    # A network file from a user is read in a child process (worker/model_import.py) under an address
    # space cap, a CPU-time cap and a wall-clock timeout, so a file built to exhaust memory or time kills
    # only that child; gan.io refuses reference bombs, huge declared sizes and oversized configurations in
    # milliseconds, so these caps only need to fit real networks. Measured (scripts/measure_import.py) on
    # a 1024 px StyleGAN2 config-f pickle in NVIDIA's format (382 MB; G, D, G_ema, 30M parameters each
    # generator): 5.1 CPU seconds, 1.44 GB peak RSS, and it needs an address space cap of at least 1.75 GiB.
    # The defaults leave 2.3x the memory and 12x the CPU time (slow shared CI cores), and no more.
    import_max_memory_bytes: int = Field(default=4 * 1024**3, ge=256 * 1024**2)
    import_max_cpu_seconds: int = Field(default=60, ge=1)
    import_timeout_seconds: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    # URL and catalogue imports: the most bytes one download may have, and how long the server may stay
    # silent (connect or between reads) before the download fails.
    max_download_bytes: int = Field(default=4 * 1024**3, gt=0)
    download_timeout_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    # The catalogue of importable networks (GET /v1/catalog); None is the bundled list of NVIDIA's
    # official networks (worker/catalog.json). A file of the same layout can name an internal mirror.
    catalog_file: Path | None = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            keys = tuple(part.strip() for part in value.split(","))
            return tuple(key for key in keys if key) if value.strip() else ()
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            # 16 characters is about 95 bits of a random base64 key: short keys are guessable.
            if len(key) < 16:
                raise ValueError("each API key must be at least 16 characters long")
            if any(ch.isspace() for ch in key):
                raise ValueError("API keys must not contain whitespace")
        if len(set(keys)) != len(keys):
            raise ValueError("API keys must be distinct")
        return keys

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.strip():
            raise ValueError("database_url is empty; leave it unset for the embedded SQLite file")
        if url.startswith(("postgres://", "postgresql://")):
            raise ValueError("use the psycopg 3 driver: postgresql+psycopg://user:password@host/dbname")
        if not url.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("database_url must start with sqlite:// or postgresql+psycopg://")
        return url

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        match = _S3_URL.fullmatch(url)
        if match is None:
            raise ValueError(
                "storage_url must be s3://bucket or s3://bucket/prefix (a bucket name of 3-63 lower-case "
                "letters, digits, dots and hyphens; a prefix of letters, digits and ._-/); leave it unset "
                "for local files under data_dir"
            )
        return url

    @field_validator("limits_redis_url")
    @classmethod
    def _check_limits_redis_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("limits_redis_url must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("redis://", "rediss://", "redis+socket://", "amqp://", "amqps://")):
            raise ValueError("broker_url must be a redis://, rediss://, redis+socket:// or amqp:// URL")
        return url

    @field_validator(
        "job_lease_seconds",
        "heartbeat_seconds",
        "broker_timeout_seconds",
        "reconcile_seconds",
        "events_poll_seconds",
        "events_keepalive_seconds",
    )
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @field_validator("webhook_base_delay_seconds", "webhook_max_delay_seconds", "webhook_timeout_seconds")
    @classmethod
    def _finite_webhook_seconds(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @field_validator("vgg16_url")
    @classmethod
    def _check_vgg16_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")):
            raise ValueError("vgg16_url must be an http(s) URL; use vgg16_path for a local file")
        return url

    @field_validator("vgg16_sha256")
    @classmethod
    def _check_vgg16_sha256(cls, digest: str | None) -> str | None:
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("vgg16_sha256 must be 64 lowercase hex digits")
        return digest

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        # Two heartbeats per lease: one late or lost renewal must not let a live job be taken away.
        if self.job_lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                f"job_lease_seconds ({self.job_lease_seconds}) must be at least twice "
                f"heartbeat_seconds ({self.heartbeat_seconds})"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        """The database to use: the configured URL, or the SQLite file under data_dir."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{(self.data_dir.resolve() / SQLITE_FILENAME).as_posix()}"

    @property
    def storage_bucket_and_prefix(self) -> tuple[str, str]:
        """The bucket and key prefix of an s3:// storage_url."""
        match = _S3_URL.fullmatch(self.storage_url or "")
        if match is None:
            raise ValueError("storage_url is not an s3:// URL")
        return match.group(1), (match.group(2) or "").strip("/")

    @property
    def effective_storage_cache_dir(self) -> Path:
        if self.storage_cache_dir is not None:
            return self.storage_cache_dir
        return self.data_dir / "cache" / "objects"

    def resolved_broker_url(self) -> str:
        """The configured broker, or the embedded one for this data directory (whose port and password
        `stylegan serve` keeps in a file there, so this reads it on every call)."""
        return self.broker_url if self.broker_url is not None else embedded_broker_url(self.data_dir)

    @property
    def effective_reconcile_seconds(self) -> float:
        return self.reconcile_seconds if self.reconcile_seconds is not None else self.heartbeat_seconds

    @property
    def effective_inference_concurrency(self) -> int:
        return self.inference_concurrency if self.inference_concurrency is not None else self.max_batch + 2

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
