"""What this CPU computes natively: is bfloat16 arithmetic a hardware feature here?

Shared by the learner (its ``auto`` base dtype) and anything in serving that wants the same
answer; neither may import the other, so the check lives here. It reads the kernel's CPU flags
rather than importing torch, so a settings check can call it cheaply.

x86 flags (Linux ``/proc/cpuinfo``, the names the kernel gives CPUID bits:
https://github.com/torvalds/linux/blob/master/arch/x86/include/asm/cpufeatures.h):
``avx512_bf16`` (AVX-512 BF16: bf16 dot products, Cooper Lake / Zen 4 on) and ``amx_bf16``
(AMX tiles with bf16 matrix multiplies, Sapphire Rapids on). oneDNN, which runs PyTorch's CPU
bf16 matmuls, uses either when present; without them bf16 is emulated through float32 and ran
4x slower than float32 on an AVX2-only machine (docs/measurements.md). Other CPUs (ARM
included) count as without: not measured here.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor listed in ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has AVX-512 BF16 or AMX-BF16 (False where the flags cannot be read)."""
    try:
        flags = cpu_flags(CPUINFO.read_text())
    except OSError:
        logger.info("cannot read %s: assuming no native bf16 on this CPU", CPUINFO)
        return False
    return bool(flags & NATIVE_BF16_FLAGS)
