"""Image loading with the official Fast3R preprocessing, keeping what maps predictions back to the original."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # torch loads with the first tensor, so that the command line's --help stays light
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageLoadError(ValueError):
    """An input image cannot be used; the message names the file."""


@dataclass(frozen=True)
class PreparedImage:
    """One view ready for the network, and the way back to the original image.

    Pixel convention (see ``fast3r_ns.geometry.conventions``): continuous coordinates with (0, 0) at the
    top-left corner of the top-left pixel, so network pixel (u, v) has its centre at (u + 0.5, v + 0.5).
    """

    path: Path
    tensor: torch.Tensor  # [1, 3, H, W] float32 in [-1, 1]
    original_size: tuple[int, int]  # (W0, H0) after EXIF orientation
    resized_size: tuple[int, int]  # (W1, H1) before the crop
    crop_offset: tuple[int, int]  # (left, top) of the crop in the resized image

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the network input."""
        return (self.tensor.shape[-1], self.tensor.shape[-2])

    @property
    def scale_to_original(self) -> tuple[float, float]:
        """(sx, sy): original pixels per resized pixel."""
        return (self.original_size[0] / self.resized_size[0], self.original_size[1] / self.resized_size[1])

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Continuous network-image coordinates [..., 2] -> continuous original-image coordinates."""
        sx, sy = self.scale_to_original
        offset = np.asarray(self.crop_offset, dtype=np.float64)
        return (np.asarray(xy, dtype=np.float64) + offset) * np.array([sx, sy])


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image, apply its EXIF orientation and convert to 8-bit RGB (16-bit greyscale is rescaled)."""
    path = Path(path)
    try:
        with Image.open(path) as raw:
            image = ImageOps.exif_transpose(raw)
            image.load()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{path}: not a readable image ({error})") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def _resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    longest = max(image.size)
    resample = Image.Resampling.LANCZOS if longest > long_side else Image.Resampling.BICUBIC
    return image.resize(tuple(int(round(d * long_side / longest)) for d in image.size), resample)


def prepare_image(image: Image.Image, size: int = 512, square_ok: bool = False) -> tuple[Image.Image, tuple[int, int]]:
    """Official resize + centre crop. Returns the cropped image and the crop's (left, top) in the resized image.

    size 224: short side to 224 and a square centre crop; otherwise the long side to ``size`` and a centre crop
    to multiples of 16 (a square image becomes 4:3 landscape unless ``square_ok``).
    """
    width, height = image.size
    if size == 224:
        resized = _resize_long_side(image, round(size * max(width / height, height / width)))
        cx, cy = resized.size[0] // 2, resized.size[1] // 2
        half_w = half_h = min(cx, cy)
    else:
        resized = _resize_long_side(image, size)
        cx, cy = resized.size[0] // 2, resized.size[1] // 2
        half_w, half_h = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if not square_ok and resized.size[0] == resized.size[1]:
            half_h = 3 * half_w // 4
    box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    return resized.crop(box), (box[0], box[1])


def to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 RGB -> [1, 3, H, W] float32 in [-1, 1] ((x / 255 - 0.5) / 0.5)."""
    import torch

    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    return ((array - 0.5) / 0.5)[None]


def load_image(path: str | Path, size: int = 512, square_ok: bool = False) -> PreparedImage:
    """Read and preprocess one image exactly as the official ``load_images``."""
    image = open_rgb(path)
    cropped, offset = prepare_image(image, size, square_ok)
    if min(cropped.size) < 16:
        raise ImageLoadError(f"{path}: {image.size[0]}x{image.size[1]} is too small for the network")
    return PreparedImage(Path(path), to_tensor(cropped), image.size, _resized(image.size, size), offset)


def _resized(original: tuple[int, int], size: int) -> tuple[int, int]:
    width, height = original
    long_side = round(size * max(width / height, height / width)) if size == 224 else size
    return tuple(int(round(d * long_side / max(original))) for d in original)


def load_images(paths: list[str | Path], size: int = 512, square_ok: bool = False) -> list[PreparedImage]:
    """Preprocess images in order (``size`` 512 or 224 for the released models)."""
    return [load_image(p, size, square_ok) for p in paths]
