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


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_bytes) -> a fresh tmpfs of that size under tmp_path (unmounted afterwards); skips where mount is
    not allowed (needs root or CAP_SYS_ADMIN)."""
    import subprocess

    mounted = []

    def mount(size: int, name: str = "tmpfs") -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode(errors='replace').strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
