"""What every network-free stage consumes: a Predictor maps preprocessed views to per-view pointmaps."""

from __future__ import annotations

from typing import Protocol

import torch

from .model.fast3r import OUTPUT_KEYS, Output

PREDICTION_KEYS = OUTPUT_KEYS
"""Keys of each per-view dict: global points [B, H, W, 3] in view 0's camera frame, their confidence
[B, H, W] (>= 1), local points [B, H, W, 3] in the view's own camera frame and their confidence."""

__all__ = ["PREDICTION_KEYS", "Output", "Predictor", "first_item"]


def first_item(tensor: torch.Tensor) -> torch.Tensor:
    """Batch item 0 of a [B, ...] prediction (the pipeline runs batch size 1)."""
    return tensor[0]


class Predictor(Protocol):
    """Anything called like the model: ``predictor(views) -> list of V dicts`` (keys: ``PREDICTION_KEYS``).

    views: V tensors [B, 3, H, W] in [-1, 1]. The Fast3R model is one; tests use oracles built from scenes
    with known geometry.
    """

    def __call__(self, views: list[torch.Tensor]) -> list[Output]: ...
