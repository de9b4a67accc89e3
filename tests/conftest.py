"""Shared test fixtures: the parity fixtures live in ../shared beside the checkout (also in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "fixtures").is_dir():
        raise FileNotFoundError(f"parity fixtures not found at {SHARED / 'fixtures'} (shared/ beside the checkout)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_dir(shared_dir: Path) -> Path:
    """The official code's outputs on a tiny random-weight model."""
    return shared_dir / "fixtures" / "fast3r-tiny"
