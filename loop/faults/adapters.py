"""Build valid (or deliberately broken) adapter versions for tests, in the store layout.

Layout (docs/architecture.md, "Adapter store and manifest"; the learner writes the same):
``{store}/{adapter_name}/v{N}/`` holding a PEFT LoRA adapter (``adapter_config.json``,
``adapter_model.safetensors``) and ``manifest.json`` (``schemas.manifest.AdapterManifest``)
whose ``files`` maps each file name to its sha256 and whose ``base_model_sha256`` is
``common.embedded_model.model_dir_sha256(model_dir)``. Written into ``.tmp-*`` and renamed
into place, manifest last, like the learner.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec

from common.embedded_model import file_sha256, model_dir_sha256
from schemas.events import AdapterPublished
from schemas.manifest import MANIFEST_FILENAME, PROMOTED_FILENAME, AdapterManifest, PromotedRecord


@dataclass(frozen=True)
class BuiltAdapter:
    version: str
    uri: str
    manifest_sha256: str

    def published(
        self, model_name: str, promote: bool = True, canary: bool = False
    ) -> AdapterPublished:
        return AdapterPublished(
            model_name=model_name,
            version=self.version,
            uri=self.uri,
            manifest_sha256=self.manifest_sha256,
            promote=promote and not canary,
            canary=canary,
        )


def write_lora_files(
    model_dir: Path,
    out: Path,
    seed: int = 0,
    rank: int = 4,
    nan: bool = False,
    std: float = 0.5,
    targets: str | list[str] | None = None,
    dora: bool = False,
) -> Path:
    """A random PEFT LoRA adapter for the model in ``model_dir`` (B != 0, so it changes output),
    on ``targets`` (PEFT target_modules; q_proj and v_proj unless told); the one LoRA writer of
    the fault suite, the benchmarks and the engine tests. ``nan=True`` fills the LoRA B weights
    with NaN (passes file checks, fails a smoke check); ``dora``: the DoRA variant
    (weight-decomposed, which serving cannot fold). Returns ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=targets or ["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        use_dora=dora,
    )
    model = get_peft_model(base, config)
    # Its own generator, not torch's global one: writing an adapter in a test must not reseed
    # whatever the test samples next.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
                if nan and "lora_B" in name:  # B alone already makes every output NaN
                    param.fill_(float("nan"))
    model.save_pretrained(out, safe_serialization=True)
    return out


def write_version(
    store: str | Path,
    adapter_name: str,
    number: int,
    model_dir: Path,
    model_name: str = "tiny",
    seed: int | None = None,
    nan: bool = False,
    base_model_sha256: str | None = None,
    std: float = 0.5,
    rank: int = 4,
    targets: str | list[str] | None = None,
) -> BuiltAdapter:
    """Write ``{store}/{adapter_name}/v{number}`` (local path or any fsspec URL)."""
    version = f"{adapter_name}@v{number}"
    staging = Path(os.environ.get("TMPDIR", "/tmp")) / f"adapter-{uuid.uuid4().hex}"
    write_lora_files(
        model_dir,
        staging,
        seed=number if seed is None else seed,
        rank=rank,
        nan=nan,
        std=std,
        targets=targets,
    )
    files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
    manifest = AdapterManifest(
        model_name=model_name,
        version=version,
        base_model=str(model_dir),
        base_model_sha256=base_model_sha256 or model_dir_sha256(model_dir),
        files=files,
        parent_version=f"{adapter_name}@v{number - 1}" if number > 1 else None,
    )
    data = manifest.model_dump_json(indent=2).encode("utf-8")
    fs, root = fsspec.core.url_to_fs(str(store))
    family = f"{root.rstrip('/')}/{adapter_name}"
    tmp, final = f"{family}/.tmp-{uuid.uuid4().hex}", f"{family}/v{number}"
    fs.makedirs(tmp, exist_ok=True)
    for name in files:
        fs.pipe_file(f"{tmp}/{name}", (staging / name).read_bytes())
    fs.pipe_file(f"{tmp}/{MANIFEST_FILENAME}", data)
    fs.mv(tmp, final, recursive=True)
    for path in staging.iterdir():
        path.unlink()
    staging.rmdir()
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    return BuiltAdapter(
        version, final if local else fs.unstrip_protocol(final), hashlib.sha256(data).hexdigest()
    )


def write_promoted(
    store: str | Path, adapter_name: str, built: BuiltAdapter, model_name: str
) -> None:
    """What the learner's store records after a promotion (``promoted.json``)."""
    record = PromotedRecord(
        model_name=model_name,
        version=built.version,
        uri=built.uri,
        manifest_sha256=built.manifest_sha256,
    )
    fs, root = fsspec.core.url_to_fs(str(store))
    fs.pipe_file(
        f"{root.rstrip('/')}/{adapter_name}/{PROMOTED_FILENAME}", record.model_dump_json().encode()
    )


def link_out_of_store(path: Path, outside: Path) -> Path:
    """Move ``path`` (a version directory or one of its files) into ``outside`` and leave a
    link to it in its place. The bytes still match every checksum, so only where the link
    leads can tell (serving refuses it: ``outside_store``). Returns the link's target."""
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / path.name
    shutil.move(path, target)
    path.symlink_to(target, target_is_directory=target.is_dir())
    return target
