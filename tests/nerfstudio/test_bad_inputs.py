"""Bad input: one clear message, a non-zero exit and nothing written (through the ``fast3r-ns process`` CLI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from reliability_runner import fake_ffmpeg
from synthetic_cameras import write_images

from fast3r_ns.cli import entrypoint


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        entrypoint(["process", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, " ".join((captured.out + captured.err).split())


def assert_nothing_written(output: Path) -> None:
    assert not output.exists()
    assert not list(output.parent.glob(f"{output.name}.tmp-*"))


def test_missing_folder(tmp_path, capsys):
    code, text = run_cli(capsys, "--data", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and "Error:" in text and "nope: no such file or folder" in text
    assert_nothing_written(tmp_path / "out")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.jpg").write_bytes(b"")
    code, text = run_cli(capsys, "--data", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and "no images found" in text
    assert_nothing_written(tmp_path / "out")


def test_one_image(tmp_path, capsys):
    write_images(tmp_path / "one", [(64, 48)])
    code, text = run_cli(capsys, "--data", str(tmp_path / "one"), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and "found 1 image; Fast3R needs at least 2 views" in text
    assert_nothing_written(tmp_path / "out")


def test_single_image_file_as_data(tmp_path, capsys):
    (path,) = write_images(tmp_path / "imgs", [(64, 48)])
    code, text = run_cli(capsys, "--data", str(path), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and "is a single image" in text
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_corrupt_or_truncated_image(tmp_path, capsys, kind):
    paths = write_images(tmp_path / "imgs", [(64, 48)] * 3)
    bad = paths[1]
    if kind == "corrupt":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    else:
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    args = ["--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out"), "--image-size", "64"]
    code, text = run_cli(capsys, *args)
    assert code == 1 and "img_01.png" in text and "not a readable image" in text
    assert_nothing_written(tmp_path / "out")


def test_unreadable_video(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"this is not a video" * 100)
    code, text = run_cli(capsys, "--data", str(video), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and "clip.mp4: ffmpeg cannot read this file as a video" in text
    assert_nothing_written(tmp_path / "out")


def test_existing_output_refused(tmp_path, capsys):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, text = run_cli(capsys, "--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out"))
    assert code == 1 and "already exists: pass --overwrite" in text
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_output_holding_the_inputs_refused(tmp_path, capsys):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    args = ["--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path), "--overwrite"]
    code, text = run_cli(capsys, *args)
    assert code == 1 and "contains the input" in text
    assert len(list((tmp_path / "imgs").iterdir())) == 2


def test_bad_image_size(tmp_path, capsys):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    args = ["--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out"), "--image-size", "100"]
    code, text = run_cli(capsys, *args)
    assert code == 1 and "--image-size 100: must be a multiple of 16" in text
    assert_nothing_written(tmp_path / "out")


def test_refine_without_opencv(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real_find_spec(name, *a)
    )
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    code, text = run_cli(capsys, "--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out"), "--refine")
    assert code == 1 and "pip install opencv-python-headless" in text and "--refine-tracks pointmaps" in text
    assert_nothing_written(tmp_path / "out")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu(tmp_path, capsys, tiny_model_dir):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    args = ["--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out"), "--image-size", "64"]
    code, text = run_cli(capsys, *args, "--model", str(tiny_model_dir), "--device", "cuda")
    assert code == 1 and "CUDA is not available here" in text
    assert_nothing_written(tmp_path / "out")


def test_missing_model_folder(tmp_path, capsys):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    (tmp_path / "model").mkdir()
    args = ["--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out"), "--image-size", "64"]
    code, text = run_cli(capsys, *args, "--model", str(tmp_path / "model"))
    assert code == 1 and "has no config.json" in text
    assert_nothing_written(tmp_path / "out")


def test_weights_unavailable_offline_through_ns_process_data(tmp_path, ns_process_data):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "NO_COLOR": "1"}
    args = ["fast3r", "--data", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "out")]
    result = subprocess.run(
        [*ns_process_data, *args, "--model", "nobody/no-such-fast3r"], env=env, capture_output=True, text=True
    )
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, text
    assert "Error: Fast3R weights 'nobody/no-such-fast3r' are not in the Hugging Face cache" in text
    assert "HF_HUB_OFFLINE is set" in text and "Traceback" not in text
    assert_nothing_written(tmp_path / "out")


def test_sigterm_through_ns_process_data_stops_ffmpeg_and_leaves_nothing(tmp_path, ns_process_data):
    import signal
    import time

    (tmp_path / "clip.mp4").write_bytes(b"\0" * 100)
    env = {**os.environ, **fake_ffmpeg(tmp_path / "bin", tmp_path / "pid"), "NO_COLOR": "1"}
    args = ["fast3r", "--data", str(tmp_path / "clip.mp4"), "--output-dir", str(tmp_path / "out")]
    run = subprocess.Popen(
        [*ns_process_data, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "pid").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    ffmpeg = int((tmp_path / "pid").read_text())
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 143 and "Interrupted: nothing was written" in output and "Traceback" not in output
    with pytest.raises(ProcessLookupError):
        os.kill(ffmpeg, 0)
    assert_nothing_written(tmp_path / "out")
    assert not (tmp_path / "out.lock").exists()
