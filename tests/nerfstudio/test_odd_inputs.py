"""Inputs that must work: odd pixel formats, EXIF rotation, mixed sizes, huge images, unicode paths, videos,
non-image files mixed in, the CPU fallback, --overwrite, --eval-data; failures leave nothing behind.

Synthetic cameras stand in for the network (``fake_reconstruct``), so these test the processing around it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from synthetic_cameras import fake_reconstruct, write_images

from fast3r_ns.errors import InputError
from fast3r_ns.process import ProcessConfig, process


def run(data: Path, output: Path, console: Console | None = None, **options):
    config = ProcessConfig(data=data, output_dir=output, image_size=64, num_downscales=1, **options)
    return process(config, console=console or Console(quiet=True), predictor=object(), reconstruct_fn=fake_reconstruct)


def frames(output: Path) -> list[dict]:
    return json.loads((output / "transforms.json").read_text())["frames"]


def test_grayscale_rgba_16bit_png(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    gray = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)
    Image.fromarray(gray, "L").save(data / "a_gray.png")
    rgba = np.dstack([np.full((48, 64, 3), 100, np.uint8), np.full((48, 64), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(data / "b_rgba.png")
    deep = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(deep).save(data / "c_16bit.png")
    assert Image.open(data / "c_16bit.png").mode.startswith("I")
    run(data, tmp_path / "out")
    written = [Image.open(tmp_path / "out" / "images" / f"frame_{i:05d}.png") for i in (1, 2, 3)]
    assert all(image.mode == "RGB" and image.size == (64, 48) for image in written)
    np.testing.assert_array_equal(np.asarray(written[0])[..., 1], gray)
    np.testing.assert_array_equal(np.asarray(written[1]), np.full((48, 64, 3), 100))
    np.testing.assert_array_equal(np.asarray(written[2])[..., 0], np.round(deep / 257).astype(np.uint8))
    assert Image.open(tmp_path / "out" / "images_2" / "frame_00003.png").size == (32, 24)


def test_exif_rotation_and_mixed_sizes(tmp_path):
    data = tmp_path / "imgs"
    write_images(data, [(96, 72), (80, 64)], suffix=".jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 96x72 landscape, displayed 72x96 portrait
    Image.open(data / "img_00.jpg").save(data / "img_02.jpg", exif=exif.tobytes())
    run(data, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert "fl_x" not in meta  # sizes differ: per-frame cameras
    assert [(f["w"], f["h"]) for f in meta["frames"]] == [(96, 72), (80, 64), (72, 96)]
    for frame in meta["frames"]:
        image = Image.open(tmp_path / "out" / frame["file_path"])
        assert image.size == (frame["w"], frame["h"]) and image.getexif().get(0x0112, 1) == 1
    # an unrotated JPEG is copied byte for byte
    assert (tmp_path / "out/images/frame_00001.jpg").read_bytes() == (data / "img_00.jpg").read_bytes()


def test_very_large_image(tmp_path):
    data = tmp_path / "imgs"
    write_images(data, [(64, 48)])
    Image.new("RGB", (6000, 4500), (10, 200, 30)).save(data / "huge.png")
    result = run(data, tmp_path / "out")
    assert result.num_images == 2
    assert Image.open(tmp_path / "out/images/frame_00001.png").size == (6000, 4500)
    assert Image.open(tmp_path / "out/images_2/frame_00001.png").size == (3000, 2250)


def test_image_above_pil_safety_limit(tmp_path, monkeypatch):
    data = tmp_path / "imgs"
    write_images(data, [(64, 48), (64, 48)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="too large for PIL's safety limit"):
        run(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unicode_and_spaces_in_paths(tmp_path):
    data = tmp_path / "données photos" / "été à Paris"
    write_images(data, [(64, 48)] * 2)
    (data / "img_00.png").rename(data / "photo n°1 ✓.png")
    output = tmp_path / "sortie scène" / "résultat 1"
    run(tmp_path / "données photos", output)
    assert [f["original_file_path"] for f in frames(output)] == [
        "été à Paris/img_01.png",
        "été à Paris/photo n°1 ✓.png",
    ]
    assert sorted(p.name for p in (output / "images").iterdir()) == ["frame_00001.png", "frame_00002.png"]


def test_non_image_files_are_skipped(tmp_path):
    data = tmp_path / "imgs"
    write_images(data, [(64, 48)] * 2)
    (data / "notes.txt").write_text("hello")
    (data / "poses.csv").write_text("1,2,3")
    (data / ".DS_Store").write_bytes(b"\0")
    buffer = io.StringIO()
    result = run(data, tmp_path / "out", console=Console(file=buffer, width=200))
    assert result.num_images == 2
    assert "Skipped 2 file(s)/folder(s): notes.txt (not an image), poses.csv (not an image)" in buffer.getvalue()
    assert len(list((tmp_path / "out" / "images").iterdir())) == 2


def test_eval_data(tmp_path):
    write_images(tmp_path / "train", [(64, 48)] * 3)
    write_images(tmp_path / "eval", [(64, 48)] * 2)
    run(tmp_path / "train", tmp_path / "out", eval_data=tmp_path / "eval")
    names = [Path(f["file_path"]).name for f in frames(tmp_path / "out")]
    assert names == [f"frame_train_{i:05d}.png" for i in (1, 2, 3)] + [f"frame_eval_{i:05d}.png" for i in (1, 2)]

    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=tmp_path / "out", eval_mode="filename", downscale_factor=1).setup()
    assert len(parser.get_dataparser_outputs("train").image_filenames) == 3
    assert len(parser.get_dataparser_outputs("test").image_filenames) == 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_video(tmp_path):
    frames_dir = tmp_path / "frames"
    write_images(frames_dir, [(96, 72)] * 20)
    video = tmp_path / "my clip.mp4"
    command = ["ffmpeg", "-v", "error", "-framerate", "10", "-i", str(frames_dir / "img_%02d.png")]
    subprocess.run([*command, "-c:v", "mpeg4", "-q:v", "2", str(video)], check=True)
    run(video, tmp_path / "out", num_frames_target=5)
    written = frames(tmp_path / "out")
    assert [f["original_file_path"] for f in written] == [f"my clip.mp4#{i:05d}" for i in range(1, 6)]
    assert all(Image.open(tmp_path / "out" / f["file_path"]).size == (96, 72) for f in written)
    assert not (tmp_path / "out" / ".video_frames").exists()  # no frame scratch folder left


def test_overwrite_replaces_only_when_complete(tmp_path):
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    output = tmp_path / "out"
    run(tmp_path / "imgs", output)  # an earlier output (it holds our marker file)
    (output / "old.txt").write_text("old")

    def broken(*args, **kwargs):
        raise RuntimeError("network exploded")

    config = ProcessConfig(data=tmp_path / "imgs", output_dir=output, image_size=64, overwrite=True)
    with pytest.raises(RuntimeError, match="network exploded"):
        process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out"]  # no temp folders left
    assert (output / "old.txt").read_text() == "old"

    run(tmp_path / "imgs", output, overwrite=True)
    assert not (output / "old.txt").exists() and (output / "transforms.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out"]


def test_image_copies_are_written_while_the_network_runs(tmp_path):
    write_images(tmp_path / "imgs", [(64, 48)] * 6)
    copies_seen = []

    def slow_network(*args, **kwargs):  # returns once the copies exist (they must not wait for it)
        deadline = time.monotonic() + 10
        while len(copies := list(tmp_path.glob("**/images/frame_*"))) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        copies_seen.append(len(copies))
        return fake_reconstruct(*args, **kwargs)

    config = ProcessConfig(data=tmp_path / "imgs", output_dir=tmp_path / "out", image_size=64, num_downscales=1)
    process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=slow_network)
    assert copies_seen == [6]
    assert len(list((tmp_path / "out" / "images_2").iterdir())) == 6


def test_skip_image_processing(tmp_path):
    write_images(tmp_path / "imgs", [(64, 48)] * 3)
    run(tmp_path / "imgs", tmp_path / "out", skip_image_processing=True)
    assert not (tmp_path / "out" / "images").exists()
    paths = [Path(f["file_path"]) for f in frames(tmp_path / "out")]
    assert paths == [(tmp_path / "imgs" / f"img_{i:02d}.png").absolute() for i in range(3)]

    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=tmp_path / "out", eval_mode="all", downscale_factor=1).setup()
    assert [Path(p) for p in parser.get_dataparser_outputs().image_filenames] == paths


def test_cpu_fallback_warns(tmp_path, monkeypatch, tiny_model_dir):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_images(tmp_path / "imgs", [(64, 48)] * 2)
    buffer = io.StringIO()
    config = ProcessConfig(
        data=tmp_path / "imgs", output_dir=tmp_path / "out", image_size=64, model=str(tiny_model_dir)
    )
    result = process(config, console=Console(file=buffer, width=200), reconstruct_fn=fake_reconstruct)
    text = buffer.getvalue()
    assert "Warning: No CUDA GPU found: running Fast3R on the CPU" in text
    assert any("on the CPU" in line and "fp32" in line for line in result.summary)
    assert (tmp_path / "out" / "transforms.json").is_file()
