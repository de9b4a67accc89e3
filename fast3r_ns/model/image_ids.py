"""Which image-index embedding row each view gets.

Rule (``random_image_idx_embedding=true``, the released setting): view 0 is the reference and gets id 0;
the other views get distinct ids from 1..999 in a pseudo-random order, as in training. Unlike the official
code, the order comes from a generator seeded with ``seed`` (default 0), never from the global RNG, so a run
is repeatable. Beyond 1000 views there are not enough distinct ids in the table the model was trained on:
views 1..V-1 then cycle through the same permutation (view k gets perm[(k - 1) mod 999] + 1), so every id
stays inside the trained range and no view is ever given the reference id.
With ``random_image_idx_embedding=false`` view k gets id k (any V; rows past 999 are extrapolated).
"""

from __future__ import annotations

import torch

NUM_TRAINED_IDS = 1000
"""Rows of the official image-index table; ids 1..999 are the non-reference ones."""


def default_image_ids(num_views: int, batch: int = 1, random: bool = True, seed: int = 0) -> torch.Tensor:
    """Deterministic ids, shape [batch, num_views] int64 (see the module docstring for the rule)."""
    if not random:
        return torch.arange(num_views).expand(batch, -1).clone()
    generator = torch.Generator().manual_seed(seed)
    rows = [_ids_from(torch.randperm(NUM_TRAINED_IDS - 1, generator=generator), num_views) for _ in range(batch)]
    return torch.stack(rows)


def official_image_ids(num_views: int, batch: int = 1, rank: int = 0) -> torch.Tensor:
    """The official draw: a seed taken from the GLOBAL torch RNG, then one permutation per sample.

    Reproduces the official ids after ``torch.manual_seed(s)`` (e.g. the parity fixtures); fails like the
    official code for more than 1000 views.
    """
    if num_views > NUM_TRAINED_IDS:
        raise ValueError(f"the official rule supports at most {NUM_TRAINED_IDS} views, got {num_views}")
    seed = int(torch.randint(0, 2**32, (1,)).item()) + rank
    generator = torch.Generator().manual_seed(seed)
    rows = [_ids_from(torch.randperm(NUM_TRAINED_IDS - 1, generator=generator), num_views) for _ in range(batch)]
    return torch.stack(rows)


def _ids_from(permutation: torch.Tensor, num_views: int) -> torch.Tensor:
    others = permutation[torch.arange(num_views - 1) % permutation.numel()] + 1
    return torch.cat((torch.zeros(1, dtype=torch.int64), others))
