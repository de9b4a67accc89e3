"""Fixtures of the geometry tests: the official recovery's results in tests/fixtures/poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as data:
        return dict(data)


@pytest.fixture(scope="session", params=["oracle_scene", "oracle_noisy_scene"])
def oracle_fixture(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """An exact or noisy synthetic scene with the official recovery's results."""
    return _load(f"poses/{request.param}.npz")


@pytest.fixture(scope="session")
def exact_oracle_fixture() -> dict[str, np.ndarray]:
    """The exact synthetic scene (the only one that stores the official aligned local pointmaps)."""
    return _load("poses/oracle_scene.npz")


@pytest.fixture(scope="session")
def tiny_fixture() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(official forward outputs of the tiny random model, official pose recovery on them)."""
    return _load("fast3r-tiny/outputs.npz"), _load("poses/tiny_model_poses.npz")
