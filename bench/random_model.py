"""A random-weight model directory of a published architecture, with the embedded tokenizer.

The GPU scale check needs a model of real size (about 1.5B parameters) on a machine with no
network and no room to carry real weights: this builds one from a committed config
(``bench/configs/NAME/config.json``) with the embedded SmolLM2 tokenizer, the vocabulary
resized to it and the special-token ids set from it, and saves it in the requested dtype.
Compute per token is the architecture's (the embedding is smaller: 49,152 tokens instead of
Qwen2.5's 151,936, so Qwen2.5-1.5B's layout comes to about 1.4B parameters). A random model
rarely emits its end-of-turn token, so every answer runs to its length limit.

    python -m bench.random_model --config qwen2.5-1.5b-instruct --out .gpu-model/qwen1.5b-random
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench import REPO

CONFIGS = REPO / "bench" / "configs"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def resized_config(config: dict[str, object], tokenizer: object) -> dict[str, object]:
    """``config`` with the vocabulary and special ids of ``tokenizer`` (a transformers one)."""
    ids = {
        "vocab_size": len(tokenizer),  # type: ignore[arg-type]
        "bos_token_id": tokenizer.bos_token_id,  # type: ignore[attr-defined]
        "eos_token_id": tokenizer.eos_token_id,  # type: ignore[attr-defined]
        "pad_token_id": tokenizer.pad_token_id,  # type: ignore[attr-defined]
    }
    return {**config, **ids}


def build(config_name: str, out: Path, dtype: str, seed: int, tokenizer_dir: Path) -> int:
    """Write the model directory; returns its parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = json.loads((CONFIGS / config_name / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    (out / "config.json").write_text(json.dumps(resized_config(config, tokenizer), indent=2))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(str(out)), dtype=getattr(torch, dtype)
    )
    model.save_pretrained(str(out), safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    from common.embedded_model import materialize_embedded_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument(
        "--config",
        default="qwen2.5-1.5b-instruct",
        choices=sorted(p.name for p in CONFIGS.iterdir() if (p / "config.json").exists()),
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = build(args.config, args.out, args.dtype, args.seed, materialize_embedded_model())
    size = f"{count / 1e9:.2f}B parameters"
    print(f"{args.config} with random {args.dtype} weights: {size} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
