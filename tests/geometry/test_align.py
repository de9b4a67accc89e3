from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns.geometry.align import align_local_to_global_official, apply_similarity, umeyama


def _random_similarity(generator: torch.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rotation = torch.linalg.qr(torch.randn(batch, 3, 3, generator=generator, dtype=torch.float64))[0]
    rotation = rotation * torch.linalg.det(rotation)[:, None, None]  # proper rotations
    scale = torch.rand(batch, generator=generator, dtype=torch.float64) * 3 + 0.2
    translation = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    return scale, rotation, translation


def test_umeyama_recovers_similarity_and_ignores_zero_weights() -> None:
    generator = torch.Generator().manual_seed(0)
    scale, rotation, translation = _random_similarity(generator, 5)
    source = torch.randn(5, 200, 3, generator=generator, dtype=torch.float64)
    target = apply_similarity(source, scale, rotation, translation)
    weights = torch.rand(5, 200, generator=generator, dtype=torch.float64)
    target[:, :20] += 100.0  # corrupted points with zero weight
    weights[:, :20] = 0
    s, r, t = umeyama(source, target, weights)
    torch.testing.assert_close(s, scale)
    torch.testing.assert_close(r, rotation)
    torch.testing.assert_close(t, translation)
    assert torch.isnan(umeyama(source[:1], target[:1], torch.zeros(1, 200))[0]).all()


def test_umeyama_reflection_is_corrected() -> None:
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(100, 3, generator=generator, dtype=torch.float64)
    target = source * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # a mirror, not a rotation
    _, rotation, _ = umeyama(source, target)
    assert torch.linalg.det(rotation) == pytest.approx(1.0)


def test_official_alignment_matches_oracle_fixture(exact_oracle_fixture: dict[str, np.ndarray]) -> None:
    oracle_fixture = exact_oracle_fixture
    for view in range(len(oracle_fixture["conf"])):
        aligned = align_local_to_global_official(
            torch.from_numpy(oracle_fixture["pts3d_local"][view]),
            torch.from_numpy(oracle_fixture["pts3d_in_other_view"][view]),
            torch.from_numpy(oracle_fixture["conf"][view]),
            percentile=85,
        )
        reference = oracle_fixture[f"est_view{view}_pts3d_local_aligned_to_global_p85"][0]
        np.testing.assert_allclose(aligned.numpy(), reference, rtol=1e-4, atol=1e-4)


def test_official_alignment_matches_tiny_model_fixture(tiny_fixture) -> None:
    outputs, poses = tiny_fixture
    for view in range(4):
        aligned = align_local_to_global_official(
            torch.from_numpy(outputs[f"view{view}_pts3d_local"][0]),
            torch.from_numpy(outputs[f"view{view}_pts3d_in_other_view"][0]),
            torch.from_numpy(outputs[f"view{view}_conf"][0]),
        )
        reference = poses[f"view{view}_pts3d_local_aligned_to_global_p85"][0]
        np.testing.assert_allclose(aligned.numpy(), reference, rtol=1e-4, atol=1e-4)
    aligned = align_local_to_global_official(
        torch.from_numpy(outputs["view0_pts3d_local"][0]),
        torch.from_numpy(outputs["view0_pts3d_in_other_view"][0]),
        torch.from_numpy(outputs["view0_conf"][0]),
        percentile=0,
    )
    np.testing.assert_allclose(aligned.numpy(), poses["view0_pts3d_local_aligned_to_global_p0"][0], atol=1e-4)
