"""The package as a user installs it: the wheel WITHOUT extras in a fresh venv (each base dependency at its floor's
release series, torch from the local wheels) imports, shows its help and names the extra a missing feature needs;
and ``fast3r-ns --help`` does not load torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("scipy", "cv2", "viser", "nerfstudio")
"""Modules of the extras, which a plain install must not bring."""


def floor_constraints() -> list[str]:
    """``name==X.Y.*`` for every base dependency declared ``name>=X.Y``: the floor's release series."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = []
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement.split(";")[0].strip())
        assert match, f"base dependency {requirement!r} has no plain floor"
        pins.append(f"{match.group(1)}=={match.group(2)}.*")
    return pins


def _clean_env() -> dict[str, str]:
    """This environment without what would let the venv see the checkout or another environment."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(command: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding our wheel and its base dependencies only (built once per test session)."""
    root = tmp_path_factory.mktemp("packaging")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(REPO)], root)
    (wheel,) = (root / "dist").glob("fast3r_ns-*.whl")
    _run([sys.executable, "-m", "venv", str(root / "venv")], root)
    (root / "floors.txt").write_text("\n".join(floor_constraints()) + "\n")
    bin_dir = root / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel), "-c", str(root / "floors.txt")], root)
    return bin_dir


@pytest.mark.slow
def test_plain_install_imports_and_helps(plain_install: Path, tmp_path: Path) -> None:
    python = str(plain_install / "python")
    check = (
        "import importlib.util, fast3r_ns, fast3r_ns.pipeline\n"
        "from fast3r_ns.model import Fast3R\n"
        "assert fast3r_ns.__file__.startswith(sys.prefix), fast3r_ns.__file__\n"
        f"print([m for m in {OPTIONAL!r} if importlib.util.find_spec(m)])\n"
    )
    assert _run([python, "-c", "import sys\n" + check], tmp_path).stdout.strip() == "[]"
    assert "process" in _run([str(plain_install / "fast3r-ns"), "--help"], tmp_path).stdout
    assert "--output-dir" in _run([str(plain_install / "fast3r-ns"), "process", "--help"], tmp_path).stdout
    pins = dict(pin.split("==") for pin in floor_constraints())
    versions = f"from importlib.metadata import version\nfor name in {list(pins)!r}:\n    print(version(name))"
    installed = _run([python, "-c", versions], tmp_path).stdout.split()
    for (name, series), got in zip(pins.items(), installed):
        assert got.startswith(series[:-1]), f"{name} {got} is not of the floor's series {series}"


@pytest.mark.slow
def test_plain_install_names_the_extra_of_a_missing_feature(plain_install: Path, tmp_path: Path) -> None:
    python = str(plain_install / "python")
    flow = "from fast3r_ns.geometry.flow import _cv2\ntry:\n    _cv2()\nexcept ImportError as error:\n    print(error)"
    assert _run([python, "-c", flow], tmp_path).stdout.strip() == (
        "--refine with flow tracks (OpenCV's optical flow) needs opencv-python-headless, which is not installed: "
        "pip install 'fast3r-ns[refine]'"
    )
    (tmp_path / "transforms.json").write_text("{}")
    view = subprocess.run(
        [str(plain_install / "fast3r-ns"), "view", str(tmp_path)],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert view.returncode == 2
    assert view.stdout.strip() == "fast3r-ns view needs viser, which is not installed: pip install 'fast3r-ns[preview]'"


def test_help_does_not_load_torch(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from fast3r_ns.cli import entrypoint\n"
        "for args in (['--help'], ['process', '--help'], ['view', '--help']):\n"
        "    try:\n"
        "        entrypoint(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'scipy', 'cv2', 'pycolmap', 'matplotlib') if m in sys.modules))\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--output-dir" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "loaded: []"
