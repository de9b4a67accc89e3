"""Fixtures of the nerfstudio tests: the tiny random-weight checkpoint in ../shared beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Folder with config.json + model.safetensors of the tiny Fast3R (accepts any multiple of 16 as size)."""
    folder = SHARED / "fixtures" / "fast3r-tiny" / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"tiny Fast3R checkpoint not found at {folder} (shared/ beside the checkout)")
    return folder
