"""``serve``: run the serving API with uvicorn.

Flags override ``SERVING_*`` environment settings (``serving.settings.ServingSettings``). The
defaults serve the embedded SmolLM2-135M on CPU with the transformers engine. On SIGTERM or
Ctrl-C uvicorn stops accepting connections, lets in-flight requests finish for up to
``--graceful-timeout`` seconds, then the app's lifespan stops the adapter manager and the engine
and flushes the event logger (``serving.app``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from common.cli import HelpFormatter, service_start
from serving.settings import ServingSettings

# flag -> settings field; flags left unset keep the environment's (or the default) value.
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--host", "host", str, "interface to listen on"),
    ("--port", "port", int, "TCP port"),
    ("--engine", "engine", str, "generation engine: transformers, vllm or fake"),
    ("--model-dir", "model_dir", str, "'embedded' or a Hugging Face model directory"),
    ("--model-name", "model_name", str, "model id shown in /v1/models"),
    ("--device", "device", str, "torch device for the transformers engine"),
    ("--dtype", "dtype", str, "float32, bfloat16 or float16"),
    ("--kafka-bootstrap", "kafka_bootstrap", str, "Kafka bootstrap servers host:port[,...]"),
    ("--spool-dir", "spool_dir", str, "disk spool for events while Kafka is unreachable"),
    ("--adapter-store", "adapter_store", str, "adapter store directory or fsspec URL"),
    ("--adapter-name", "adapter_name", str, "adapter family this replica serves"),
    ("--max-batch-size", "max_batch_size", int, "most sequences one engine step decodes"),
    (
        "--graceful-timeout",
        "graceful_timeout_seconds",
        float,
        "seconds in-flight requests may take to finish on shutdown",
    ),
]


def _setting_help(field: str, help_text: str) -> str:
    """The flag's help with the setting it overrides and that setting's default."""
    default = ServingSettings.model_fields[field].default
    text = f"{help_text} (default: {default}; env SERVING_{field.upper()})"
    return text.replace("%", "%%")  # argparse formats help with %


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve the OpenAI-compatible chat API with paired answers, "
        "feedback logging to Kafka and adapter hot-swap. Flags override SERVING_* settings.",
        formatter_class=HelpFormatter,
    )
    for flag, field, kind, help_text in _FLAGS:
        parser.add_argument(
            flag, dest=field, type=kind, default=None, help=_setting_help(field, help_text)
        )
    kafka = parser.add_mutually_exclusive_group()
    kafka.add_argument(
        "--kafka",
        dest="kafka_enabled",
        action="store_true",
        default=None,
        help="log events to Kafka (default; env SERVING_KAFKA_ENABLED)",
    )
    kafka.add_argument(
        "--no-kafka",
        dest="kafka_enabled",
        action="store_false",
        help="do not log events (development only)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level of the service and uvicorn",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> ServingSettings:
    overrides: dict[str, Any] = {
        field: getattr(args, field)
        for _f, field, _k, _h in _FLAGS
        if getattr(args, field, None) is not None
    }
    if args.kafka_enabled is not None:
        overrides["kafka_enabled"] = args.kafka_enabled
    return ServingSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args, settings = service_start(build_parser(), argv, settings_from_args, "serve: ")
    if settings is None:
        return 2
    import uvicorn

    from serving.app import create_app

    configure_threads(settings)
    config = uvicorn_config(settings, create_app(settings), args.log_level)
    uvicorn.Server(config).run()
    return 0


def configure_threads(settings: ServingSettings) -> int | None:
    """torch's thread count for the transformers engine, set before it loads (the setting, or
    the CPUs this process may use: ``common.cpu_budget``); None for the other engines: vLLM sets
    its own threads (``VLLM_CPU_OMP_THREADS_BIND``), the fake engine runs no torch."""
    if settings.engine != "transformers":
        return None
    from common.cpu_budget import configure_torch_threads

    return configure_torch_threads(settings.torch_threads)


def uvicorn_config(settings: ServingSettings, app: Any, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        timeout_keep_alive=int(settings.keep_alive_seconds),
        # Off: uvicorn's would believe the client-written leftmost X-Forwarded-For entry with
        # forwarded_allow_ips=*; the app's own middleware reads it (serving.forwarded).
        proxy_headers=False,
    )


if __name__ == "__main__":
    sys.exit(main())
