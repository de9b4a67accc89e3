"""Every other bad case of issue #16 (point 5): exit != 0 and one clear line, never a traceback, checked before
the network where it can be. Through the ``fast3r-ns`` CLI; permission cases run with all capabilities dropped
(root would bypass the permission bits)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from synthetic_cameras import write_images

from fast3r_ns.cli import entrypoint

RUNNER = Path(__file__).parent / "reliability_runner.py"


def cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        entrypoint(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, " ".join((captured.out + captured.err).split())


def process_args(tmp_path: Path, *extra: str) -> list[str]:
    if not (tmp_path / "in").exists():
        write_images(tmp_path / "in", [(64, 48)] * 2)
    return [
        "process",
        "--data",
        str(tmp_path / "in"),
        "--output-dir",
        str(tmp_path / "out"),
        "--image-size",
        "64",
        *extra,
    ]


def assert_one_error(code: int, text: str, message: str) -> None:
    assert code == 1, text
    assert len(re.findall(r"(?<!\w)Error:", text)) == 1 and message in text and "Traceback" not in text, text


def assert_nothing_written(tmp_path: Path) -> None:
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]


@pytest.fixture
def model_copy(tiny_dir, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir / "model", folder)
    for path in (folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_safetensors(capsys, tmp_path, model_copy, damage):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(b"" if damage == "empty" else weights.read_bytes()[:5000])
    code, text = cli(capsys, *process_args(tmp_path), "--model", str(model_copy), "--device", "cpu")
    assert_one_error(code, text, "model.safetensors (" + ("0" if damage == "empty" else "5,000"))
    assert "bytes) is not a complete safetensors file" in text and "Loading images" not in text  # before any work
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing", "1 missing keys: decoder.dec_norm.bias"),
        ("extra", "1 unexpected keys: not.a.fast3r.key"),
        ("shape", "1 keys of another shape: decoder.dec_norm.bias [3] (config.json wants [48])"),
    ],
)
def test_keys_not_matching(capsys, tmp_path, model_copy, edit, message):
    state = load_file(str(model_copy / "model.safetensors"))
    if edit == "missing":
        state.pop("decoder.dec_norm.bias")
    elif edit == "extra":
        state["not.a.fast3r.key"] = torch.zeros(2)
    else:
        state["decoder.dec_norm.bias"] = torch.zeros(3)
    save_file(state, str(model_copy / "model.safetensors"))
    code, text = cli(capsys, *process_args(tmp_path), "--model", str(model_copy), "--device", "cpu")
    assert_one_error(code, text, message)
    assert "does config.json belong to it?" in text
    assert_nothing_written(tmp_path)


def test_config_not_matching_the_weights(capsys, tmp_path, model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["decoder_args"]["embed_dim"] = 64
    (model_copy / "config.json").write_text(json.dumps(config))
    code, text = cli(capsys, *process_args(tmp_path), "--model", str(model_copy), "--device", "cpu")
    assert_one_error(code, text, "does not match its config.json")
    assert "keys of another shape" in text
    (model_copy / "config.json").write_text("{not json")
    code, text = cli(capsys, *process_args(tmp_path), "--model", str(model_copy), "--device", "cpu")
    assert_one_error(code, text, "config.json: not a usable Fast3R config (JSONDecodeError")


def test_pickle_refusal_names_no_flag_users_cannot_set(capsys, tmp_path, model_copy):
    weights = model_copy / "model.safetensors"
    torch.save(load_file(str(weights)), model_copy / "model.pth")
    weights.unlink()
    code, text = cli(capsys, *process_args(tmp_path), "--model", str(model_copy), "--device", "cpu")
    assert_one_error(code, text, "is a pickled checkpoint, which can run arbitrary code")
    assert "fast3r-ns reads only model.safetensors" in text and "allow_pickle" not in text


@pytest.mark.parametrize("name", ["./models/fast3r", "../fast3r", "~/no-such-fast3r", "models/fast3r/v2", "in/x"])
def test_model_that_looks_like_a_path_is_no_such_folder_at_once(capsys, tmp_path, monkeypatch, name):
    args = process_args(tmp_path)
    monkeypatch.chdir(tmp_path)  # "in/x": in/ exists here, so it is a path, not the Hub repo "in/x"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    started = time.monotonic()
    code, text = cli(capsys, *args, "--model", name)
    assert_one_error(code, text, f"--model {name}: no such folder")
    assert time.monotonic() - started < 5 and "Loading images" not in text  # before any work, no Hub look-up


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--device", "mps"], "--device mps: Fast3R runs on cuda or cpu here, not on mps"),
        (["--device", "meta"], "--device meta: Fast3R runs on cuda or cpu here, not on meta"),
        (["--device", "gpu0"], "--device gpu0:"),
        (["--min-confidence", "nan"], "--min-confidence nan: must be a finite number"),
        (["--min-confidence", "inf"], "--min-confidence inf: must be a finite number"),
        (["--refine-distortion"], "--refine-distortion refines with the cameras: pass --refine as well"),
    ],
)
def test_bad_options_refused_before_any_work(capsys, tmp_path, option, message):
    code, text = cli(capsys, *process_args(tmp_path), *option)
    assert_one_error(code, text, message)
    assert "Collecting input images" not in text
    assert_nothing_written(tmp_path)


def test_skip_image_processing_with_a_decompression_bomb(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 64x48 = 3072 > 2 x 500: PIL's bomb error
    code, text = cli(capsys, *process_args(tmp_path), "--skip-image-processing")
    assert_one_error(code, text, "img_00.png: too large for PIL's safety limit")
    assert_nothing_written(tmp_path)


def test_read_only_mount(capsys, tmp_path, tmpfs):
    point = tmpfs(1 << 20)
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    args = process_args(tmp_path)
    args[args.index("--output-dir") + 1] = str(point / "out")
    code, text = cli(capsys, *args)
    assert_one_error(code, text, f"--output-dir {point / 'out'}: cannot write there ({point} is on a read-only file")
    assert list(point.iterdir()) == []


def unprivileged() -> list[str]:
    """Command prefix that runs without the capabilities that let root ignore permission bits."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop the capabilities")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def run_unprivileged(*args: str) -> tuple[int, str]:
    command = [*unprivileged(), sys.executable, str(RUNNER), *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_unwritable_output_parent(tmp_path):
    args = process_args(tmp_path)
    parent = tmp_path / "locked"
    parent.mkdir(mode=0o555)
    args[args.index("--output-dir") + 1] = str(parent / "out")
    code, text = run_unprivileged(*args)
    assert_one_error(code, text, f"--output-dir {parent / 'out'}: cannot write there (no permission to write into")
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("mode", [0o000, 0o644])  # unreadable; readable but not searchable (no execute bit)
def test_unreadable_input_folder(tmp_path, mode):
    args = process_args(tmp_path)
    (tmp_path / "in").chmod(mode)
    try:
        code, text = run_unprivileged(*args)
    finally:
        (tmp_path / "in").chmod(0o755)
    assert_one_error(code, text, f"{tmp_path / 'in'}: cannot read this folder (permission denied")
    assert "no images found" not in text
    assert_nothing_written(tmp_path)


def test_unreadable_subfolder_and_file_are_reported(tmp_path):
    args = process_args(tmp_path)
    write_images(tmp_path / "in" / "private", [(64, 48)])
    write_images(tmp_path / "in" / "more", [(64, 48)])
    (tmp_path / "in" / "private").chmod(0o000)
    (tmp_path / "in" / "more" / "img_00.png").chmod(0o000)
    write_images(tmp_path / "in" / "ok", [(64, 48)])
    try:
        code, text = run_unprivileged(*args, "--num-downscales", "0")
    finally:
        (tmp_path / "in" / "private").chmod(0o755)
    assert code == 0, text
    assert "Skipped 2 file(s)/folder(s): more/img_00.png (unreadable (permission denied))" in text
    assert "private (unreadable folder (permission denied: needs read and execute permission))" in text
    frames = json.loads((tmp_path / "out" / "transforms.json").read_text())["frames"]
    assert [f["original_file_path"] for f in frames] == ["img_00.png", "img_01.png", "ok/img_00.png"]


def test_view_invalid_transforms(capsys, tmp_path):
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "transforms.json").write_text('{"frames": [{"file_path": "a.png"}')
    code, text = cli(capsys, "view", str(tmp_path / "scene"))
    assert code == 2 and "cannot read the scene in" in text and "JSONDecodeError" in text and "Traceback" not in text
    (tmp_path / "scene" / "transforms.json").write_text('{"frames": [{"file_path": "a.png"}]}')
    code, text = cli(capsys, "view", str(tmp_path / "scene"))
    assert code == 2 and "KeyError" in text and "Traceback" not in text


def test_view_bad_port_refused_at_once(capsys, tmp_path):
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "transforms.json").write_text('{"frames": []}')
    for port in ("-1", "70000"):
        started = time.monotonic()
        code, text = cli(capsys, "view", str(tmp_path / "scene"), "--port", port)
        assert code == 2 and f"--port {port} is not a port number (0-65535" in text
        assert time.monotonic() - started < 5
