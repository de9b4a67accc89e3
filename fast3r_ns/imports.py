"""Imports done when needed: optional dependencies (one clear error naming the pip extra) and packages whose
public names load on first use (so ``fast3r-ns --help`` does not import torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .errors import InputError

DISTRIBUTIONS = {"cv2": "opencv-python-headless", "scipy": "scipy", "viser": "viser", "nerfstudio": "nerfstudio"}
"""The pip distribution of each optional module (where the names differ)."""


class MissingDependencyError(InputError, ImportError):
    """An optional dependency is not installed; the message names the feature and the extra to install."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``module`` imported, or a ``MissingDependencyError`` naming ``feature`` and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{feature} needs {DISTRIBUTIONS.get(top, top)}, which is not installed: pip install 'fast3r-ns[{extra}]'"
        ) from error


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a submodule) on first access."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
