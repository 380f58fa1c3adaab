"""Every setting of the service in one place, read from the environment (prefix IMPRESS_)."""
from __future__ import annotations

import functools
from typing import Literal, NamedTuple, Optional
from urllib.parse import urlsplit

import standardwebhooks
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .contract import MODEL_CHOICES, OFFLINE_MODEL, Device, Perceptual, Precision, ScheduleName, check_thresholds
from .api_keys import parse_api_keys, parse_key_secrets
from .logs import LogFormat


class ExampleCredentials(NamedTuple):
    api_key_ids: frozenset[str]
    webhook_secrets: frozenset[str]
    passwords: frozenset[str]


# Published values nobody may run with: "change-me" as a key (its id), password or webhook secret.
EXAMPLE_CREDENTIALS = ExampleCredentials(
    api_key_ids=parse_api_keys("change-me"),
    webhook_secrets=frozenset({"whsec_Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWU="}),
    passwords=frozenset({"change-me"}))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMPRESS_", env_file=".env", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="job records, blobs, results (and the broker unless broker_url)")
    broker_url: Optional[str] = Field(
        None, description="Celery broker when not redis_url, e.g. amqp://user:pass@rabbitmq:5672/vhost for a large "
                          "fleet (quorum queues, publisher confirms); Redis keeps the job records either way")
    key_prefix: str = Field("impress", description="prefix of every Redis key the service writes")
    queue: str = Field("impress", description="Celery queue of the GPU work: purification, evaluation, protection")
    detect_queue: str = Field("impress-detect", description="Celery queue of triage (detect): one forward pass, "
                              "served by a cheap CPU or GPU worker so it never waits behind a purification")
    log_format: LogFormat = Field("text", description="log lines: text, or json (one object a line); both carry "
                                  "the request id and job id")
    result_ttl_s: int = Field(24 * 3600, ge=60, description="how long jobs, inputs and results are kept after "
                              "their last change: the most a request's expires_in may ask, and its default")
    tombstone_ttl_s: int = Field(7 * 24 * 3600, ge=0, description="how long an expired job's id is remembered "
                                 "(its owner only), so its URLs answer 410 gone rather than 404")
    max_job_events: int = Field(1000, ge=10, description="entries kept on a job's event stream (older ones are "
                                "trimmed; GET /v1/jobs/{id}/events replays what is left)")
    prefer_wait_max_s: float = Field(60.0, ge=0, description="the longest `Prefer: wait=N` a job POST may wait "
                                     "for its job to finish (200) before answering 202")
    events_heartbeat_s: float = Field(15.0, gt=0, description="seconds between heartbeats (comment lines) of an "
                                      "idle event stream")

    # Tenants: who may call /v1, and how much each key may ask of the service.
    api_keys: str = Field("", description="comma-separated API keys, or their hashes as sha256:<hex>; once any "
                                         "is set, every /v1 endpoint requires one (Authorization: Bearer, or X-API-Key)")
    auth: Literal["keys", "disabled"] = Field(
        "keys", description="disabled: an explicitly open service (local use), keys or not")
    metrics_require_key: bool = Field(False, description="/metrics answers only callers with an API key")
    rate_limit: str = Field("1200/minute", description="requests per key to /v1 (the `limits` notation, e.g. "
                                                     "'10/second'), counted in Redis across API replicas")
    max_unfinished_jobs_per_key: int = Field(32, ge=1, description="queued or running jobs one key may have")
    max_stored_bytes_per_key: int = Field(
        512 * 1024 * 1024, ge=0, description="input image bytes (as stored: decoded and re-encoded as PNG) one key "
                                             "may hold in Redis until they expire; past it 429 storage_quota_exceeded "
                                             "(0: no quota)")

    # Upload limits: checked by the API before anything is queued.
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="bytes per uploaded image")
    max_pixels: int = Field(2048 * 2048, ge=64, description="pixels per image (decompression-bomb guard)")
    max_images_per_job: int = Field(8, ge=1, description="images in one job")
    max_iterations: int = Field(5000, ge=1, description="optimisation steps (iterations) any part of one job may "
                                "run: purify's iters, evaluate's and protect's methods, mimicry's training steps")
    max_evaluate_methods: int = Field(8, ge=1, description="protections, and purifiers, one evaluation may name "
                                      "(each list; the matrix runs their product)")
    max_inflight_submits: int = Field(
        32, ge=1, description="submissions handled at once; more are answered 503 at once instead of queueing")
    upload_timeout_s: float = Field(60.0, gt=0, description="time a request body may take to arrive in full "
                                    "(a slower one is cut off: 408 request_timeout)")

    # Models: None means each preset's own VAE (the SD VAE the authors used).
    vae: Optional[str] = Field(None, description=f"autoencoder: {MODEL_CHOICES}")
    # Diffusion scenarios (docs/diffusion.md): hub ids in the local Hugging Face cache, or local folders.
    pipeline: Optional[str] = Field(None, description="SD img2img pipeline: img2img edits, AdvDM, SDS(-), DiffPure, "
                                                      "GrIDPure, mimicry")
    inpaint_pipeline: Optional[str] = Field(None, description="SD inpainting pipeline (9-channel UNet): inpainting "
                                                              "edits, PhotoGuard's diffusion attack")
    upscale_pipeline: Optional[str] = Field(None, description="SD x4 upscaler pipeline: Noisy Upscaling")
    perceptual: Perceptual = Field(
        "lpips-vgg", description="perceptual distance of the hinge: LPIPS-VGG, or 1-SSIM offline (the default of "
                                 f"commands run on {OFFLINE_MODEL} when this is not set)")
    device: Device = "auto"
    batch_size: int = Field(4, ge=1, description="most images optimised together in one step (CUDA: fewer if memory is short)")
    cpu_batch_pixels: int = Field(8 * 64 * 64, ge=1, description="on CPU, the most pixels one step holds "
                                  "(batching helps small images, spills caches on large ones)")
    memory_headroom: float = Field(0.8, gt=0, le=1, description="fraction of free GPU memory a batch may plan to use")
    compile: bool = Field(False, description="torch.compile the optimisation step (falls back to eager on failure)")
    schedule: ScheduleName = Field(
        "published", description="optimiser schedule of purify jobs that name none: published (the authors' loop) "
                                 "or fast (a fifth of the iterations; bench/results/time-to-quality.md)")
    precision: Precision = Field(
        "auto", description="forward-pass autocast: auto = bf16 on CUDA (fp16 without bf16), fp32 on CPU; "
                            "bf16 = also on CPU (about 2x faster on CPUs with bf16 units)")
    tile_above: int = Field(1024, ge=64, description="pictures with a longer side are purified as overlapping tiles "
                            "(bounded memory at any size; bench/results/tiling.md)")
    tile_size: int = Field(512, ge=32, description="side of a purification tile, at most")
    tile_overlap: int = Field(64, ge=0, description="pixels neighbouring tiles share, blended with linear ramps")
    vae_tiling: bool = Field(False, description="tiled VAE for images larger than its sample size (bounded memory)")
    vae_checkpointing: bool = Field(False, description="recompute VAE activations in the backward pass (less memory, ~1/3 more compute)")
    detect_threshold: Optional[float] = Field(
        None, ge=0, description="default detection score above which an image is flagged 'protected' (from "
                                "`impress calibrate`); unset: the thresholds shipped for the model, if any")
    detect_low_threshold: Optional[float] = Field(
        None, ge=0, description="default detection score below which an image is flagged 'purified' "
                                "(`impress calibrate --low-fpr`)")
    picture_cache: str = Field("~/.cache/impress/pictures", description="where `impress pictures fetch` keeps the "
                               "Debian packages of the evaluation pictures (worker/engine/pictures.py)")
    detect_sync_max_images: int = Field(4, ge=0, description="detect requests up to this many images are answered inline")
    detect_sync_timeout_s: float = Field(10.0, ge=0, description="how long an inline detect request waits for a worker")

    # Webhooks and image URLs (impress/webhooks.py, impress/ssrf.py).
    webhook_secret: Optional[str] = Field(
        None, description="Standard Webhooks master secret, whsec_<base64>: each API key's own signing secret is "
                          "derived from it and the key's id (GET /v1/webhook-secret shows a key its own); an open "
                          "service signs with it directly. Without it (and without the key's entry in "
                          "webhook_key_secrets) webhooks are refused")
    webhook_key_secrets: str = Field(
        "", description="per-key signing secrets that replace the derived ones: <key or sha256:hex>=whsec_<base64>, "
                        "comma-separated")
    webhook_allowed_hosts: str = Field(
        "", description="hosts or CIDRs (comma-separated) that webhooks may reach although they are private, "
                        "loopback or link-local")
    url_allowed_hosts: str = Field(
        "", description="image URLs' allow-list, entries `host` or `host:port` (comma-separated; an address or CIDR "
                        "as host): hosts image URLs may reach although private, loopback or link-local, and the only "
                        "ones they may use plain http for; a port other than 80/443 must be listed as host:port")
    max_concurrent_fetches_per_key: int = Field(
        8, ge=1, description="image URL fetches one key may have in progress at once; past it 429 too_many_fetches")
    webhook_queue: str = Field("webhooks", description="Celery queue of webhook deliveries (HTTP only, a light worker)")
    webhook_timeout_s: float = Field(10.0, gt=0, description="overall time limit of one webhook delivery attempt; "
                                     "the delivery task is killed at twice this plus 10 s")
    webhook_max_retries: int = Field(8, ge=0, description="retries of a failed delivery, with exponential backoff")
    webhook_retry_base_s: float = Field(2.0, gt=0, description="first retry delay; doubles each retry, at most 10 min")
    webhook_progress_every_s: float = Field(5.0, ge=0, description="least time between two progress webhooks of a job")
    url_fetch_timeout_s: float = Field(10.0, gt=0, description="overall time limit of fetching one image_url "
                                       "(DNS, connection, headers and body: a slower server is cut off)")

    # Manifests (impress/manifest.py): C2PA-signed into every purified or protected PNG.
    signing_cert: Optional[str] = Field(None, description="PEM certificate chain (signer first) that signs result "
                                        "manifests; without it a development certificate, marked as such, is made")
    signing_key: Optional[str] = Field(None, description="PEM private key (ES256) of signing_cert")

    # Worker behaviour.
    progress_every: int = Field(10, ge=1, description="purify: steps between the loop's host-device syncs (progress, "
                                "cancel and plateau checks)")
    progress_interval_s: float = Field(0.5, ge=0, description="least time between two progress writes of a job "
                                       "(each also reads its cancel flag: a cancel stops a job this soon after)")
    soft_time_limit_s: int = Field(3 * 3600, ge=10)
    hard_time_limit_s: int = Field(3 * 3600 + 300, ge=20)
    max_attempts: int = Field(2, ge=1, description="runs of a job whose worker died (1 = no retry)")

    readiness_cache_s: float = Field(2.0, ge=0, description="age up to which /readyz answers its last report; "
                                     "older, a background check refreshes it (0: every probe waits for a check)")
    worker_heartbeat_s: float = Field(10.0, gt=0, description="seconds between a worker's heartbeats (a thread "
                                      "writes them to Redis, also while a job runs); /readyz counts a worker alive "
                                      "until it has missed three")
    job_kinds: str = Field("", description="comma-separated Python modules that register job kinds of their own "
                                         "(impress.jobspec.register); the API and every worker import them at start")

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    def perceptual_for(self, model: str) -> Perceptual:
        """The distance a command runs with on `model` when none is asked for: the configured one; unset,
        1 - SSIM on the offline model (which then needs no download at all), else LPIPS-VGG."""
        if "perceptual" not in self.model_fields_set and model == OFFLINE_MODEL:
            return "dssim"
        return self.perceptual

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def job_kind_modules(self) -> list[str]:
        return [name.strip() for name in self.job_kinds.split(",") if name.strip()]

    @property
    def broker_is_store(self) -> bool:
        """The broker's queues live in the job store's Redis (queue lengths can be read there)."""
        return self.broker == self.redis_url

    @model_validator(mode="after")
    def _tiles_overlap_less_than_their_side(self) -> "Settings":
        if self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be smaller than tile_size ({self.tile_size})")
        return self

    @model_validator(mode="after")
    def _no_example_credentials(self) -> "Settings":
        """Refuse to start with the example values of deploy/k8s/secret.example.yaml and the docs."""
        found = [name for name, used in (
            ("IMPRESS_API_KEYS", not parse_api_keys(self.api_keys).isdisjoint(EXAMPLE_CREDENTIALS.api_key_ids)),
            ("IMPRESS_WEBHOOK_SECRET", self.webhook_secret in EXAMPLE_CREDENTIALS.webhook_secrets),
            ("IMPRESS_REDIS_URL", urlsplit(self.redis_url).password in EXAMPLE_CREDENTIALS.passwords),
            ("IMPRESS_BROKER_URL", urlsplit(self.broker_url or "").password in EXAMPLE_CREDENTIALS.passwords)) if used]
        if found:
            raise ValueError(f"{', '.join(found)} hold(s) the published example credentials (deploy/k8s/"
                             "secret.example.yaml): set your own")
        return self

    @model_validator(mode="after")
    def _detect_thresholds_ordered(self) -> "Settings":
        check_thresholds(self.detect_threshold, self.detect_low_threshold)
        return self

    @field_validator("webhook_secret")
    @classmethod
    def _whsec_form(cls, secret: Optional[str]) -> Optional[str]:
        if secret is not None:
            check_whsec(secret)
        return secret

    @field_validator("webhook_key_secrets")
    @classmethod
    def _key_secrets_form(cls, setting: str) -> str:
        for secret in parse_key_secrets(setting).values():
            check_whsec(secret)
        return setting


def check_whsec(secret: str) -> None:
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret is whsec_<base64>")
    try:  # a bad key fails here, at start, not at the first delivery
        standardwebhooks.Webhook(secret)
    except Exception as exc:
        raise ValueError(f"a webhook secret is not whsec_<base64>: {exc}") from exc


@functools.lru_cache
def get_settings() -> Settings:
    return Settings()
