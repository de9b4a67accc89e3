"""Outputs moved from the GPU to the CPU as each head chunk finishes (pinned memory, side stream) equal the outputs
kept on the GPU. GPU only: on a CPU the move is a no-op; the GPU run is in benchmarks/results/gpu_tests_h100.log."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns.model import Fast3R


def load(tiny_dir, device: str):
    model = Fast3R.from_pretrained(tiny_dir / "model").to(device)
    model.head_chunk_size = 1  # one chunk per view: many copies in flight
    pre = np.load(tiny_dir / "preprocess.npz")
    views = [torch.from_numpy(pre[f"view{i}_img"]).to(device) for i in range(int(pre["num_views"]))]
    return model, views


def compare(model, views) -> list[dict]:
    with torch.inference_mode():
        kept = model(views)
        moved = model(views, output_device="cpu")
    for a, b in zip(kept, moved):
        assert set(a) == set(b)
        for key in a:
            assert b[key].device.type == "cpu"
            torch.testing.assert_close(b[key], a[key].cpu(), rtol=0, atol=0)
    return moved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_outputs_land_in_pinned_memory(tiny_dir):
    moved = compare(*load(tiny_dir, "cuda"))
    assert all(out[key].is_pinned() for out in moved for key in out)
