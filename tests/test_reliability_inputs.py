"""Input discovery (issue #16, point 4): never our outputs or masks as views, every skip reported with its reason,
what Pillow reads, float and 16-bit pixels, a minimum size, --eval-data overlap refused."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from synthetic_cameras import fake_reconstruct, write_images

from fast3r_ns.errors import InputError
from fast3r_ns.io.images import HEIF_READABLE, MIN_SIDE, open_rgb
from fast3r_ns.io.inputs import list_images
from fast3r_ns.process import ProcessConfig, process


def run(data: Path, output: Path, console: Console | None = None, **options):
    config = ProcessConfig(data=data, output_dir=output, image_size=64, num_downscales=1, **options)
    return process(config, console=console or Console(quiet=True), predictor=object(), reconstruct_fn=fake_reconstruct)


def names(output: Path) -> list[str]:
    return [f["original_file_path"] for f in json.loads((output / "transforms.json").read_text())["frames"]]


def skipped(folder: Path) -> dict[str, str]:
    return {s.name: s.reason for s in list_images(folder)[1]}


def test_output_inside_the_input_run_twice_keeps_three_views(tmp_path):
    write_images(tmp_path / "in", [(64, 48)] * 3)
    run(tmp_path / "in", tmp_path / "in" / "out")
    run(tmp_path / "in", tmp_path / "in" / "out", overwrite=True)
    assert names(tmp_path / "in" / "out") == ["img_00.png", "img_01.png", "img_02.png"]
    assert skipped(tmp_path / "in") == {"out": "an output of fast3r-ns (.fast3r_ns)"}


def test_our_files_and_masks_are_never_views(tmp_path):
    write_images(tmp_path / "in", [(64, 48)] * 2)
    for folder in ("masks", "images_2", "fast3r_preview"):
        write_images(tmp_path / "in" / folder, [(64, 48)])
    write_images(tmp_path / "in" / "more", [(64, 48)])
    Image.new("RGB", (64, 48)).save(tmp_path / "in" / "fast3r_report.png")
    buffer = io.StringIO()
    run(tmp_path / "in", tmp_path / "out", console=Console(file=buffer, width=400))
    assert names(tmp_path / "out") == ["img_00.png", "img_01.png", "more/img_00.png"]
    assert skipped(tmp_path / "in") == {
        "fast3r_preview": "fast3r-ns preview files",
        "fast3r_report.png": "fast3r-ns report",
        "images_2": "downscaled copies",
        "masks": "masks, not views",
    }
    assert "Skipped 4 file(s)/folder(s): fast3r_preview (fast3r-ns preview files)" in buffer.getvalue()


def test_data_that_is_an_earlier_output_refused(tmp_path):
    write_images(tmp_path / "in", [(64, 48)] * 2)
    run(tmp_path / "in", tmp_path / "out")
    with pytest.raises(InputError, match="out is an output of fast3r-ns: pass the folder of the original images"):
        run(tmp_path / "out", tmp_path / "again")
    run(tmp_path / "out" / "images", tmp_path / "again")  # its images/ folder is fine
    assert len(names(tmp_path / "again")) == 2


def test_links_loops_and_unsupported_files_are_reported(tmp_path):
    data = tmp_path / "in"
    write_images(data, [(64, 48)] * 2)
    write_images(tmp_path / "elsewhere", [(64, 48)])
    (data / "linked").symlink_to(tmp_path / "elsewhere")  # followed
    (data / "loop").symlink_to(data)
    (data / "gone.png").symlink_to(tmp_path / "missing.png")
    (data / "notes.txt").write_text("x")
    (data / "phone.heic").write_bytes(b"\0" * 64)
    (data / ".hidden.png").write_bytes(b"")  # hidden: ignored without a word
    images, _ = list_images(data)
    assert [p.relative_to(data).as_posix() for p in images] == ["img_00.png", "img_01.png", "linked/img_00.png"]
    expected = {
        "gone.png": "broken link",
        "loop": "symlinked folder loop",
        "notes.txt": "not an image",
    }
    if not HEIF_READABLE:
        expected["phone.heic"] = "HEIC/HEIF needs an extra: pip install pillow-heif"
    assert {k: v for k, v in skipped(data).items() if k != "phone.heic" or not HEIF_READABLE} == expected


def test_only_heic_files_name_the_extra(tmp_path):
    if HEIF_READABLE:
        pytest.skip("pillow-heif is installed here: HEIC files are read")
    (tmp_path / "in").mkdir()
    for index in range(2):
        (tmp_path / "in" / f"IMG_{index}.HEIC").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"no images found .*IMG_0.HEIC \(HEIC/HEIF needs an extra: pip install pil"):
        run(tmp_path / "in", tmp_path / "out")


def test_avif_images_are_read(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    for index, value in enumerate((40, 200)):
        Image.new("RGB", (64, 48), (value, 90, 10)).save(data / f"v{index}.avif", quality=100)
    run(data, tmp_path / "out")
    written = np.asarray(Image.open(tmp_path / "out" / "images" / "frame_00002.png"), dtype=int)
    assert written.shape == (48, 64, 3) and np.abs(written.mean(axis=(0, 1)) - (200, 90, 10)).max() < 6


def test_float_tiff_is_not_a_black_frame(tmp_path):
    values = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    Image.fromarray(values).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "unit.tif"))[..., 1], np.round(values * 255))
    wide = (values * 255).astype(np.float32)  # already 0..255
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "wide.tif"))[..., 0], np.round(wide))
    nan = values.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    assert np.asarray(open_rgb(tmp_path / "nan.tif"))[0, 0, 0] == 0


def test_16_bit_rgb_png_keeps_its_levels(tmp_path):
    cv2 = pytest.importorskip("cv2")
    deep = (np.arange(48 * 64 * 3).reshape(48, 64, 3) * 40 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])  # OpenCV writes BGR
    assert np.abs(np.asarray(open_rgb(tmp_path / "deep.png"), dtype=int) - deep / 257).max() <= 1


def test_float_rgb_tiff_is_skipped_as_unsupported_pixel_type(tmp_path):
    cv2 = pytest.importorskip("cv2")
    data = tmp_path / "in"
    write_images(data, [(64, 48)] * 2)
    cv2.imwrite(str(data / "hdr.tif"), np.random.default_rng(0).random((48, 64, 3), dtype=np.float32))
    buffer = io.StringIO()
    run(data, tmp_path / "out", console=Console(file=buffer, width=400))
    assert names(tmp_path / "out") == ["img_00.png", "img_01.png"]
    assert "hdr.tif (unsupported pixel type (a TIFF layout Pillow cannot read" in buffer.getvalue()


@pytest.mark.parametrize("size", [(1, 1), (16, 12), (MIN_SIDE - 1, 100)])
def test_tiny_images_refused_by_name(tmp_path, size):
    data = tmp_path / "in"
    write_images(data, [(64, 48)] * 2)
    Image.new("RGB", size).save(data / "tiny.png")
    pattern = rf"1 image\(s\) cannot be used, remove them: .*tiny.png: {size[0]}x{size[1]} is too small"
    with pytest.raises(InputError, match=pattern):
        run(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extreme_aspect_ratio_is_not_called_too_small(tmp_path):
    data = tmp_path / "in"
    write_images(data, [(64, 48)] * 2)
    Image.new("RGB", (20000, 100)).save(data / "panorama.png")
    config = ProcessConfig(data=data, output_dir=tmp_path / "out", image_size=512)
    with pytest.raises(InputError, match=r"panorama.png: 20000x100: aspect ratio 200:1 is too extreme .* 32:1"):
        process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=fake_reconstruct)


@pytest.mark.parametrize("where", ["same", "inside", "holding", "link"])
def test_eval_data_overlapping_data_refused(tmp_path, where):
    write_images(tmp_path / "in", [(64, 48)] * 3)
    write_images(tmp_path / "in" / "sub", [(64, 48)] * 2)
    evaluation = {"same": tmp_path / "in", "inside": tmp_path / "in" / "sub", "holding": tmp_path}.get(where)
    if where == "link":  # a separate folder whose files are links to two of --data's
        evaluation = tmp_path / "eval"
        evaluation.mkdir()
        (evaluation / "a.png").symlink_to(tmp_path / "in" / "img_00.png")
        (evaluation / "b.png").symlink_to(tmp_path / "in" / "img_01.png")
    match = "share 2 image" if where == "link" else "overlaps --data"
    with pytest.raises(InputError, match=match):
        run(tmp_path / "in", tmp_path / "out", eval_data=evaluation)


def test_non_utf8_file_name_is_used_and_shown_replaced(tmp_path):
    data = tmp_path / "in"
    write_images(data, [(64, 48)] * 2)
    os.rename(data / "img_00.png", os.fsencode(data) + b"/caf\xe9.png")  # Latin-1 name, not valid UTF-8
    run(data, tmp_path / "out")
    assert names(tmp_path / "out") == ["caf\ufffd.png", "img_01.png"]
    with pytest.raises(InputError, match="not valid UTF-8: rename it or drop the flag"):
        run(data, tmp_path / "out2", skip_image_processing=True)
