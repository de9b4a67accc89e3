"""What every network-free stage consumes: a Predictor maps preprocessed views to per-view pointmaps."""

from __future__ import annotations

from typing import Protocol

import torch

from .model.fast3r import OUTPUT_KEYS

Output = dict[str, torch.Tensor]


def first_item(tensor: torch.Tensor) -> torch.Tensor:
    """Batch item 0 of a [B, ...] prediction (the pipeline runs batch size 1)."""
    return tensor[0]


PREDICTION_KEYS = OUTPUT_KEYS
"""Keys of each per-view dict: global points [B, H, W, 3] in view 0's camera frame, their confidence
[B, H, W] (>= 1), local points [B, H, W, 3] in the view's own camera frame and their confidence."""


class Predictor(Protocol):
    """Anything called like the model: ``predictor(views) -> list of V dicts`` (keys: ``PREDICTION_KEYS``).

    views: V tensors [B, 3, H, W] in [-1, 1]. The Fast3R model is one; tests use oracles built from scenes
    with known geometry.
    """

    def __call__(self, views: list[torch.Tensor]) -> list[Output]: ...


class Fast3RPredictor:
    """Runs a Fast3R model under inference mode on a device; returns float32 outputs on the CPU."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.model.output_device = "cpu"  # outputs leave the GPU as each head chunk finishes

    def max_views_per_pass(self, views: list[torch.Tensor]) -> int | None:
        """Views one pass can hold in the free GPU memory (``fast3r_ns.chunked.views_per_pass_for_memory``);
        None on the CPU (no automatic chunking there)."""
        if self.device.type != "cuda":
            return None
        from .chunked import free_gpu_gib, views_per_pass_for_memory

        patch = self.model.config.encoder.patch_size
        tokens = sum(v.shape[0] * v.shape[-2] * v.shape[-1] for v in views) / len(views) / patch**2  # per view
        return views_per_pass_for_memory(free_gpu_gib(self.device), tokens, self.model.dtype.itemsize)

    @torch.inference_mode()
    def __call__(self, views: list[torch.Tensor]) -> list[Output]:
        dtype = self.model.dtype  # cast before the transfer: half the bytes and no fp32 copy on the GPU
        outputs = self.model([v.to(dtype).to(self.device, non_blocking=True) for v in views])
        return [{k: v.float().cpu() for k, v in out.items()} for out in outputs]
