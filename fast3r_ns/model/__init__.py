"""The Fast3R network: pure nn.Modules plus checkpoint loading."""

from .attention import AttentionOptions
from .config import DecoderConfig, EncoderConfig, Fast3RConfig, HeadConfig
from .fast3r import Fast3R
from .image_ids import default_image_ids, official_image_ids
from .loading import DEFAULT_REPO, WeightsNotFoundError, save_pretrained

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
