"""The Fast3R network: pure nn.Modules plus checkpoint loading (the names load torch on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..imports import lazy_exports
from .config import DEFAULT_REPO, DecoderConfig, EncoderConfig, Fast3RConfig, HeadConfig

if TYPE_CHECKING:
    from .attention import AttentionOptions
    from .fast3r import Fast3R
    from .image_ids import default_image_ids, official_image_ids
    from .loading import WeightsNotFoundError, save_pretrained

_LAZY = {
    "AttentionOptions": ".attention",
    "Fast3R": ".fast3r",
    "default_image_ids": ".image_ids",
    "official_image_ids": ".image_ids",
    "WeightsNotFoundError": ".loading",
    "save_pretrained": ".loading",
}
__all__ = [
    "DEFAULT_REPO",
    "AttentionOptions",
    "DecoderConfig",
    "EncoderConfig",
    "Fast3R",
    "Fast3RConfig",
    "HeadConfig",
    "WeightsNotFoundError",
    "default_image_ids",
    "official_image_ids",
    "save_pretrained",
]
__getattr__ = lazy_exports(__name__, _LAZY)
