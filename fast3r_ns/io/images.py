"""Image loading with the official Fast3R preprocessing, keeping what maps predictions back to the original."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

if TYPE_CHECKING:  # torch loads with the first tensor, so that the command line's --help stays light
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".heic", ".heif")
HEIF_SUFFIXES = (".heic", ".heif")
MIN_SIDE = 32
"""Smallest short side (pixels) of an input: below it the network sees at most 2x2 patches of real detail (its
input is upsampled), focal lengths come out as fractions of a pixel and images_8 copies would be 1-3 px."""
SUPPORTED_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F")
SUPPORTED_MODES += ("I;16", "I;16B", "I;16L", "I;16N")


def _register_heif() -> bool:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


HEIF_READABLE = _register_heif()
AVIF_READABLE = features.check("avif")


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
    """Open an image, apply its EXIF orientation and convert to 8-bit RGB.

    16-bit and 32-bit integer greyscale are divided by 257 (65535 -> 255); 32-bit float greyscale is taken as
    0..1 when its finite values lie there, else as 0..255, and clipped (NaN -> 0).
    """
    path = Path(path)
    try:
        with Image.open(path) as raw:
            image = ImageOps.exif_transpose(raw)
            image.load()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{path}: not a readable image ({error})") from None
    if image.mode.startswith("I;16") or image.mode == "I":
        image = _to_uint8(np.asarray(image, dtype=np.float64) / 257.0)
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        unit = finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)
        image = _to_uint8(np.nan_to_num(values * (255.0 if unit else 1.0), nan=0.0, posinf=255.0, neginf=0.0))
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.round().clip(0, 255).astype(np.uint8))


def _looks_like_tiff(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(4) in (b"II*\0", b"MM\0*")


def probe_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((W, H) after EXIF orientation, None) for a usable image; (None, reason to skip it) for an unsupported pixel
    type; (None, None) when its header cannot be read here (``open_rgb`` then names the problem)."""
    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                size = (size[1], size[0])
    except Image.DecompressionBombError:
        return None, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        if path.suffix.lower() in (".tif", ".tiff") and _looks_like_tiff(path):
            return None, "unsupported pixel type (a TIFF layout Pillow cannot read, e.g. 3-channel float)"
        return None, None
    if mode not in SUPPORTED_MODES:
        return None, f"unsupported pixel type ({mode})"
    return size, None


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
    problem = size_problem(image.size, size)
    if problem is not None or min(cropped.size) < 16:
        raise ImageLoadError(f"{path}: {problem or 'too small for the network'}")
    return PreparedImage(Path(path), to_tensor(cropped), image.size, _resized(image.size, size), offset)


def size_problem(original: tuple[int, int], size: int = 512) -> str | None:
    """Why an image of ``original`` (W, H) cannot be a view at network size ``size``, or None."""
    width, height = original
    if min(width, height) < MIN_SIDE:
        return f"{width}x{height} is too small (short side under {MIN_SIDE} px)"
    if size == 224:
        return None
    network = [(d // 2 * 2 // 16) * 16 for d in _resized(original, size)]
    if min(network) < 16:
        ratio = max(width, height) / min(width, height)
        return (
            f"{width}x{height}: aspect ratio {ratio:.0f}:1 is too extreme for --image-size {size} (the network input "
            f"would be {network[0]}x{network[1]} px; crop it to at most {size // 16}:1)"
        )
    return None


def _resized(original: tuple[int, int], size: int) -> tuple[int, int]:
    width, height = original
    long_side = round(size * max(width / height, height / width)) if size == 224 else size
    return tuple(int(round(d * long_side / max(original))) for d in original)


def load_images(paths: list[str | Path], size: int = 512, square_ok: bool = False) -> list[PreparedImage]:
    """Preprocess images in order (``size`` 512 or 224 for the released models)."""
    return [load_image(p, size, square_ok) for p in paths]
