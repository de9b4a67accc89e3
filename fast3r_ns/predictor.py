"""The Fast3R model as a ``Predictor`` (``fast3r_ns.predictions``): inference mode on a device, outputs on the CPU."""

from __future__ import annotations

import torch

from .chunked import free_gpu_gib, views_per_pass_for_memory
from .predictions import Output


class Fast3RPredictor:
    """Runs a Fast3R model under inference mode on a device; returns float32 outputs on the CPU."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    def max_views_per_pass(self, views: list[torch.Tensor]) -> int | None:
        """Views one pass can hold in the free GPU memory (``fast3r_ns.chunked.views_per_pass_for_memory``);
        None on the CPU (no automatic chunking there)."""
        if self.device.type != "cuda":
            return None
        patch = self.model.config.encoder.patch_size
        tokens = sum(v.shape[0] * v.shape[-2] * v.shape[-1] for v in views) / len(views) / patch**2  # per view
        return views_per_pass_for_memory(free_gpu_gib(self.device), tokens, self.model.dtype.itemsize)

    @torch.inference_mode()
    def __call__(self, views: list[torch.Tensor]) -> list[Output]:
        dtype = self.model.dtype  # cast before the transfer: half the bytes and no fp32 copy on the GPU
        views = [v.to(dtype).to(self.device, non_blocking=True) for v in views]
        outputs = self.model(views, output_device="cpu")  # outputs leave the GPU as each head chunk finishes
        return [{k: v.float().cpu() for k, v in out.items()} for out in outputs]
