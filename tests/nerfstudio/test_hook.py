"""The .pth start-up hook: free at start-up, adds `ns-process-data fast3r`, never breaks nerfstudio."""

from __future__ import annotations

import os
import subprocess
import sys

from fast3r_ns.nerfstudio.process_data import ProcessFast3R, register


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_installed_hook_costs_only_stdlib():
    code = (
        "import sys; print(any(type(f).__name__ == '_Finder' for f in sys.meta_path)); "
        "print(sorted(m for m in ('fast3r_ns', 'torch', 'numpy', 'nerfstudio', 'tyro') if m in sys.modules))"
    )
    result = python(code)
    assert result.stdout.split("\n")[:2] == ["True", "[]"], "is fast3r-ns installed (pip install -e .)?"
    assert result.stderr == ""


def test_stale_pth_is_silent():
    """A .pth left behind when the package is gone (e.g. a moved editable checkout) must not print at every start."""
    from pathlib import Path

    import fast3r_ns.nerfstudio

    pth = Path(fast3r_ns.nerfstudio.__file__).with_name("fast3r_ns_nerfstudio.pth").read_text()
    stdlib_only = "sys.path = [p for p in sys.path if p.startswith(sys.base_prefix) and 'site-packages' not in p]"
    code = f"import sys; {stdlib_only}\n{pth}\nprint('ok')"
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/")
    assert (result.stdout, result.stderr) == ("ok\n", "")


def test_ns_process_data_lists_and_documents_fast3r(ns_process_data):
    env = {**os.environ, "COLUMNS": "200"}
    listing = subprocess.run([*ns_process_data, "--help"], capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and "fast3r" in listing.stdout and "images" in listing.stdout
    usage = subprocess.run([*ns_process_data, "fast3r", "--help"], capture_output=True, text=True)
    text = " ".join(usage.stdout.split())
    assert usage.returncode == 0
    for option in (
        "--data",
        "--output-dir",
        "--eval-data",
        "--verbose",
        "--num-downscales",
        "--num-frames-target",
        "--skip-image-processing",
        "--model",
        "--image-size",
        "--dtype",
        "--focal-mode",
        "--conf-percentile",
        "--max-points",
        "--overwrite",
    ):
        assert option in text, option
    assert "instead of COLMAP" in text


def test_broken_plugin_leaves_nerfstudio_working():
    code = (
        "import sys; sys.modules['fast3r_ns.nerfstudio.process_data'] = None\n"
        "import nerfstudio.scripts.process_data as m\n"
        "print('fast3r' in str(m.Commands), 'images' in str(m.Commands), callable(m.entrypoint))"
    )
    result = python(code)
    assert result.stdout.split() == ["False", "True", "True"]
    assert "fast3r-ns: could not add 'ns-process-data fast3r'" in result.stderr


def test_register_once():
    import nerfstudio.scripts.process_data as module

    register(module)
    register(module)
    members = [getattr(arg, "__origin__", arg) for arg in module.Commands.__args__]
    assert members.count(ProcessFast3R) == 1
