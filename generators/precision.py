"""Numeric precision of the torch models (``fp32`` | ``bf16`` | ``auto``), resolved per device.

bf16 halves the bytes a convolution moves and, on CPUs with native bf16 dot products (AVX512-BF16 on
AMD Zen 4 and Intel Cooper Lake, AMX on Intel Sapphire Rapids and later), doubles or more the
arithmetic rate of oneDNN's kernels. Without them torch still runs bf16, emulated and slower than
fp32, so ``auto`` only picks bf16 where the hardware has it. Autocast keeps weights, optimiser state,
losses and EMA in fp32; only the network's matmuls and convolutions run in bf16. On CPU the networks
also switch to channels-last, the layout oneDNN's bf16 convolutions are fast in.

A run's outputs depend on its resolved precision (bf16 rounds differently), so ``fp32`` stays the
default of every profile whose thresholds and figures were measured in fp32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from benchmark.machine import cpu_description as describe_cpu
from benchmark.machine import cpu_flags

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
#: /proc/cpuinfo flags that give native bf16 dot products to oneDNN
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_description() -> str:
    """``benchmark.machine.cpu_description`` with torch's thread count (what the figures ran on)."""
    return describe_cpu(torch.get_num_threads())


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 matmuls natively (CUDA: compute capability >= 8.0)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def check_precision(precision: str, what: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{what} {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: ``auto`` becomes bf16 where ``device`` has native bf16, else fp32."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        logger.warning("bf16 requested on %s without native bf16 support: emulated, likely slower than fp32", device)
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast to bf16 when the resolved ``precision`` is bf16; a no-op for fp32."""
    device = torch.device(device)
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def memory_format(precision: str, device: torch.device | str) -> torch.memory_format:
    """channels-last for bf16 on CPU (oneDNN's fast bf16 convolutions); the default layout otherwise, so
    that fp32 results stay those of the contiguous kernels."""
    if precision == "bf16" and torch.device(device).type == "cpu":
        return torch.channels_last
    return torch.contiguous_format
