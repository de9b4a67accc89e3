"""Reading and writing files: images, video frames, point clouds, transforms.json, COLMAP models."""

from .images import IMAGE_SUFFIXES, ImageLoadError, PreparedImage, load_image, load_images, open_rgb

__all__ = ["IMAGE_SUFFIXES", "ImageLoadError", "PreparedImage", "load_image", "load_images", "open_rgb"]
