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
