"""Fixtures of the nerfstudio tests: the tiny random-weight checkpoint (tests/fixtures) and ns-process-data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dir: Path) -> Path:
    """Folder with config.json + model.safetensors of the tiny Fast3R (accepts any multiple of 16 as size)."""
    return tiny_dir / "model"


@pytest.fixture(scope="session")
def ns_process_data() -> list[str]:
    """nerfstudio's ns-process-data console script of this environment, or its entry point run as the script does.

    (The script beside sys.executable when there is one; otherwise, e.g. in a venv that only sees nerfstudio
    through --system-site-packages, the console_scripts entry point loaded in this interpreter.)
    """
    script = Path(sys.executable).parent / "ns-process-data"
    if script.is_file():
        return [str(script)]
    launcher = (
        "import sys; from importlib.metadata import entry_points; "
        "(ep,) = entry_points(group='console_scripts', name='ns-process-data'); sys.exit(ep.load()())"
    )
    return [sys.executable, "-c", launcher]
