"""Helpers shared by the benchmarks: result records, random released-size weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def commit() -> str:
    """The measured commit: FAST3R_COMMIT when set (device copies have no .git), else git's HEAD."""
    if os.environ.get("FAST3R_COMMIT"):
        return os.environ["FAST3R_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=RESULTS.parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device: str | torch.device) -> float:
    """Wait for the GPU's queued work (CUDA devices), then read the clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def device_slug() -> str:
    """Short name for result files: "h100" for "NVIDIA H100 80GB HBM3", "h200", ..., "cpu"."""
    words = device_name().lower().split()
    return next((w for w in words if re.fullmatch(r"[a-z]+\d{2,}[a-z]*", w)), words[-1])


def append(path: Path, record: dict) -> None:
    """Append one JSON line (and echo it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    with path.open("a") as f:
        f.write(line + "\n")


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights ~ N(0, 1/fan_in), LayerNorm gains 1 + 0.2 N(0,1), biases 0.1 N(0,1); last head conv scaled so the
    pointmaps are O(1) with positive depth (the recipe of the tiny parity fixture, at any size)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator).to(param.device, param.dtype)
        if name.endswith("bias"):
            param.copy_(0.1 * noise)
        elif param.ndim == 1:
            param.copy_(1 + 0.2 * noise)
        else:
            param.copy_(noise / param[0].numel() ** 0.5)
    for head in (model.downstream_head, model.downstream_head_local):
        if head is not None:
            last = head.dpt.head[-1]
            last.weight.mul_(0.25)
            last.bias.copy_(torch.tensor([0.05, -0.05, 1.2, 0.3], dtype=last.bias.dtype))
