"""Prometheus metrics of the adapter manager (default registry, ``rlhf_serving_`` prefix)."""

from prometheus_client import Counter, Gauge, Histogram

SWAPS = Counter(
    "rlhf_serving_adapter_swaps_total",
    "Changes of the serving adapter version, by action (promote/rollback) and source "
    "(admin API, adapters topic, start-up catch-up).",
    ["action", "source"],
)
SWAP_SECONDS = Histogram(
    "rlhf_serving_adapter_swap_duration_seconds",
    "Time from the start of a swap (fetch, verify, load, smoke check) to the alias flip.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LOAD_STAGE_SECONDS = Histogram(
    "rlhf_serving_adapter_load_stage_seconds",
    "Time of each stage of loading a version: fetch (download and verify the files), "
    "engine_load (into the model), smoke_check (a short greedy answer with it).",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60),
)
REFUSALS = Counter(
    "rlhf_serving_adapter_refusals_total",
    "Adapter versions refused, by reason.",
    ["reason"],
)
LOADED = Gauge("rlhf_serving_adapters_loaded", "Adapter versions resident in the engine.")
TOPIC_RESETS = Counter(
    "rlhf_serving_adapter_topic_resets_total",
    "Times the adapters topic ended before our position (broker lost its data); re-read.",
)
DEGRADED = Gauge(
    "rlhf_serving_adapters_degraded",
    "1 while this replica serves without having read the adapters topic (Kafka unreachable at "
    "start-up: it serves the store's latest promoted version, or the base), 0 otherwise.",
)
