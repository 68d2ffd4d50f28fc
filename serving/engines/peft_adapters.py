"""Several LoRA adapter versions resident on one base model, selected per batch row.

PEFT injects LoRA layers into the base model on the first load; later versions are added with
``load_adapter`` and removed with ``delete_adapter``. A forward call given
``adapter_names=[...]`` (one name per row, ``"__base__"`` for the plain model) runs each row
through its own adapter (PEFT "mixed adapter batches",
https://huggingface.co/docs/peft/developer_guides/lora#inference-with-different-lora-adapters-in-the-same-batch).
Only the engine loop thread may call these methods: they mutate the model.

When every row of a step uses the same adapter, the step names none and runs that adapter as
PEFT's *active* one: the per-row path splits the batch by adapter around every LoRA layer, which
made a 128-row decode step of SmolLM2 with a rank-8 all-linear adapter cost 406 ms against
290 ms for the active-adapter path (273 ms with no adapter), on this CPU (docs/measurements.md).
Such a step goes further with folding on (the default): it runs the base model on copies of the
weights with that adapter folded in (``common.decoding.folded_lora``), at the base's speed. A
step of base rows only runs with every LoRA layer switched off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.decoding.folded_lora import FoldedAdapter, lora_layers, set_lora_enabled
from serving.engines.model_engine import lora_config
from serving.engines.protocol import BASE, AdapterRejected

logger = logging.getLogger(__name__)

PEFT_BASE = "__base__"


class AdapterSet:
    def __init__(self, base_model: Any, fold: bool = True) -> None:
        self._base = base_model
        self._peft: Any | None = None
        self._versions: list[str] = []
        self._active: str | None = None  # PEFT's active adapter, what an unnamed forward runs
        self._fold = fold
        # At most one folded version (the one whole steps use: the served one), kept while it
        # is resident; None also when its folding was impossible (see _unfoldable).
        self._folded: FoldedAdapter | None = None
        self._unfoldable: set[str] = set()
        self._layers: list[Any] = []  # PEFT's LoRA layers
        self._lora_on = True

    @property
    def model(self) -> Any:
        # With no adapter left, PeftModel.forward fails on its stale active adapter; the base
        # model (its LoRA layers now empty) computes the plain forward.
        return self._peft if self._versions else self._base

    def versions(self) -> list[str]:
        return list(self._versions)

    def peft_name(self, version: str) -> str:
        return PEFT_BASE if version == BASE else version

    def forward_kwargs(self, versions: list[str], fold: bool = True) -> dict[str, Any]:
        """Set the model up for a forward whose rows use ``versions``; the keyword arguments
        that forward needs. ``fold=False`` keeps PEFT's adapter path (a one-off decode, such as
        a smoke check, should not replace the served version's folded weights)."""
        if not self._versions:
            return {}
        first = versions[0]
        if all(v == first for v in versions):
            if first == BASE:
                self._plain_weights(lora=False)
            elif not (fold and self._fold and self._use_folded(first)):
                self._plain_weights(lora=True)
                self._activate(first)  # one adapter for the whole batch: no per-row split
            return {}
        self._plain_weights(lora=True)
        # Name every row: without adapter_names PEFT would apply its *active* adapter to all.
        return {"adapter_names": [self.peft_name(v) for v in versions]}

    def _use_folded(self, version: str) -> bool:
        """Swap in ``version`` folded into the base weights (folding it first if needed), LoRA
        layers off; False if it cannot be folded."""
        if self._folded is None or self._folded.version != version:
            if version in self._unfoldable:
                return False
            self._drop_folded()
            assert self._peft is not None
            self._folded = FoldedAdapter.build(self._peft, version)
            if self._folded is None:
                self._unfoldable.add(version)
                return False
        self._folded.swap_in()
        self._set_lora(False)
        return True

    def _plain_weights(self, lora: bool) -> None:
        if self._folded is not None:
            self._folded.swap_out()
        self._set_lora(lora)

    def _set_lora(self, enabled: bool) -> None:
        if self._lora_on != enabled:
            set_lora_enabled(self._layers, enabled)
            self._lora_on = enabled

    def _drop_folded(self, version: str | None = None) -> None:
        """Forget the folded copy (only if it is ``version``'s, when given)."""
        if self._folded is not None and version in (None, self._folded.version):
            self._folded.swap_out()
            self._folded = None

    def load(self, version: str, path: Path) -> None:
        from peft import PeftModel

        if version in (BASE, PEFT_BASE):
            raise AdapterRejected(f"{version!r} is reserved for the base model")
        if version in self._versions:
            raise AdapterRejected(f"adapter {version} is already loaded (versions are immutable)")
        lora_config(path)
        self._plain_weights(lora=True)
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self._base, str(path), adapter_name=version, is_trainable=False
                )
                result = None
            else:
                result = self._peft.load_adapter(
                    str(path), adapter_name=version, is_trainable=False
                )
        except Exception as exc:
            self._forget(version)
            raise AdapterRejected(f"{path}: adapter does not fit the base model ({exc})") from exc
        unexpected = list(getattr(result, "unexpected_keys", None) or [])
        if unexpected:
            self._forget(version)
            raise AdapterRejected(f"{path}: weights that match no module: {unexpected[:3]}")
        self._match_base_dtype(version)
        self._versions.append(version)
        self._layers = lora_layers(self._peft)
        self._activate_any()
        logger.info("adapter %s loaded from %s (%d resident)", version, path, len(self._versions))

    def _match_base_dtype(self, version: str) -> None:
        """PEFT keeps LoRA weights in float32 under a bfloat16 model (casting activations at
        every layer): 128-row steps with the adapter then ran at 372 tokens/s against 847 on
        the base. Serving never trains them, so they take the base's dtype."""
        dtype = next(self._base.parameters()).dtype
        assert self._peft is not None
        for module in self._peft.modules():
            for weights in (getattr(module, "lora_A", None), getattr(module, "lora_B", None)):
                if weights is not None and version in weights:
                    weights[version].to(dtype)

    def unload(self, version: str) -> None:
        if version not in self._versions:
            return
        self._drop_folded(version)
        self._plain_weights(lora=True)
        self._forget(version)
        self._unfoldable.discard(version)
        self._versions.remove(version)
        self._activate_any()
        logger.info("adapter %s unloaded (%d resident)", version, len(self._versions))

    def _activate_any(self) -> None:
        # PeftModel.forward reads its *active* adapter's config even when every row is named
        # through adapter_names, so that must always be a resident one.
        self._active = None
        if self._versions:
            self._activate(self._versions[-1])

    def _activate(self, version: str) -> None:
        if self._peft is not None and version != self._active:
            self._peft.set_adapter(version, inference_mode=True)
            self._peft.eval()
            self._active = version

    def _forget(self, version: str) -> None:
        if self._peft is not None and version in self._peft.peft_config:
            self._peft.delete_adapter(version)
