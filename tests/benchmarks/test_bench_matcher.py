"""The matcher benchmark's scoring (benchmarks/bench_matcher.py) on a synthetic pair with a known disparity (the
Middlebury pair itself needs scikit-image, the optional `bench` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_matcher  # noqa: E402

from fast3r_ns.geometry.flow import FlowOptions  # noqa: E402
from fast3r_ns.io import PreparedImage  # noqa: E402


def _shifted_pair(shift: int = 7, width: int = 192, height: int = 128):
    """A smooth random texture and the same texture moved left by ``shift`` px (a fronto-parallel stereo pair)."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(-1, 1, size=(height // 4 + 1, (width + shift) // 4 + 1))
    big = np.kron(coarse, np.ones((4, 4)))[:height, : width + shift]
    big = big + 0.3 * rng.uniform(-1, 1, size=big.shape)
    left, right = big[:, :width], big[:, shift : shift + width]
    images = [
        PreparedImage(
            f"{n}.png",
            torch.from_numpy(np.repeat(im[None, None], 3, 1).astype(np.float32)),
            (width, height),
            (width, height),
            (0, 0),
        )
        for n, im in (("left", left), ("right", right))
    ]
    flow = np.zeros((height, width, 2))
    flow[..., 0] = -shift
    return images, flow


def test_backward_flow_inverts_a_shift_and_errors_have_the_requested_size() -> None:
    flow = np.zeros((20, 30, 2))
    flow[..., 0] = -4
    back = bench_matcher.backward_of(flow)
    assert np.isnan(back[:, 26:]).all()  # nothing lands right of x = 25
    np.testing.assert_array_equal(back[:, :26, 0], 4.0)
    error = bench_matcher.smooth_error((60, 80), 9.0, seed=3)
    assert np.median(np.linalg.norm(error, axis=-1)) == pytest.approx(9.0)


def test_scores_of_the_flow_matcher_on_a_known_shift() -> None:
    images, flow = _shifted_pair()
    exact = bench_matcher.score(images, flow, "exact", 0, FlowOptions())
    assert exact["anchors"] > 100 and exact["kept_frac"] > 0.5
    assert exact["epe_median"] < 0.3 and exact["within_1px"] > 0.95
    far = bench_matcher.score(images, flow, "error_9px", 0, FlowOptions())
    assert far["prior_epe_median"] == pytest.approx(9.0, rel=0.05)
    assert far["kept_frac"] <= far["kept_frac_without_correction_gate"]
