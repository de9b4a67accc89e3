"""Shared test fixtures: the parity data lives in tests/fixtures (README.md there says what each file is)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: fast3r-tiny/ (the official code's outputs), poses/ (its pose recovery), spec/."""
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_dir(fixtures_dir: Path) -> Path:
    """The official code's outputs on a tiny random-weight model."""
    return fixtures_dir / "fast3r-tiny"


@pytest.fixture(scope="session")
def spec_dir(fixtures_dir: Path) -> Path:
    """The released model's config.json and its state-dict table (key, shape, dtype per row)."""
    return fixtures_dir / "spec"
