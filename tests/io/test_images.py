"""Official preprocessing, bit for bit, and the mapping back to the original image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fast3r_ns.io import ImageLoadError, load_image, load_images


def test_matches_official_preprocessing_exactly(tiny_dir):
    ref = np.load(tiny_dir / "preprocess.npz")
    paths = [tiny_dir / "images" / str(ref[f"view{i}_filename"]) for i in range(int(ref["num_views"]))]
    images = load_images(paths, size=int(ref["load_size"]))
    for i, image in enumerate(images):
        np.testing.assert_array_equal(image.tensor.numpy(), ref[f"view{i}_img"])
        assert [image.size[1], image.size[0]] == ref[f"view{i}_true_shape"][0].tolist()
        assert list(image.original_size) == ref["original_size_wh"][i].tolist()


@pytest.mark.parametrize(
    "wh,expected",
    [
        ((1920, 1080), (512, 288)),
        ((4032, 3024), (512, 384)),
        ((3024, 4032), (384, 512)),
        ((1536, 1024), (512, 336)),
        ((700, 700), (512, 384)),
    ],
)
def test_official_sizes_at_512(tmp_path, wh, expected):
    path = tmp_path / "im.png"
    Image.new("RGB", wh, (10, 20, 30)).save(path)
    assert load_image(path, 512).size == expected


def test_size_224_is_a_square_crop(tmp_path):
    path = tmp_path / "im.png"
    Image.new("RGB", (640, 480), (10, 20, 30)).save(path)
    assert load_image(path, 224).size == (224, 224)


def test_mapping_back_to_original_pixels(tmp_path):
    """A marker pixel in the original lands where to_original says the network pixel came from."""
    original = np.zeros((300, 400, 3), np.uint8)
    original[150:170, 100:120] = 255  # 20x20 white square, centre (110, 160) in continuous coords
    path = tmp_path / "marker.png"
    Image.fromarray(original).save(path)
    image = load_image(path, 80)
    net = (image.tensor[0].numpy().mean(0) + 1) / 2  # [H, W] in [0, 1]
    rows, cols = np.nonzero(net > 0.5)
    centre = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
    np.testing.assert_allclose(image.to_original(centre), [110, 160], atol=2.0)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.new("RGB", (160, 96), (200, 10, 10)).save(path, exif=exif)
    image = load_image(path, 64)
    assert image.original_size == (96, 160)
    assert image.size[1] > image.size[0]


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_image(path)


def test_16_bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(path)
    value = (load_image(path, 64).tensor[0, 0, 0, 0].item() + 1) / 2 * 255
    assert abs(value - 40000 / 257) < 1.0
