"""Start-up hook (stdlib only) adding ``fast3r`` to ``ns-process-data``, whose subcommands are a fixed Union.

A .pth file at the site-packages root loads this file by path (as ``fast3r_ns_nerfstudio_hook``, without importing
the ``fast3r_ns`` package, whose ``__init__`` may import torch). It installs a meta-path finder that, when
``nerfstudio.scripts.process_data`` is imported, runs the real module and then extends its ``Commands``
(see ``fast3r_ns.nerfstudio.process_data.register``). Failures are reported on stderr and never break
nerfstudio.
"""

from __future__ import annotations

import importlib.abc
import sys

TARGET = "nerfstudio.scripts.process_data"


class _ExtendingLoader(importlib.abc.Loader):
    """Wraps the real loader: executes the module, then registers the subcommand."""

    fast3r_ns_hook = True

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            from fast3r_ns.nerfstudio.process_data import register

            register(module)
        except Exception as error:  # a broken plugin must never break nerfstudio
            reason = f"{type(error).__name__}: {error}"
            print(f"fast3r-ns: could not add 'ns-process-data fast3r' ({reason})", file=sys.stderr)

    def __getattr__(self, name: str):  # get_source, get_filename, is_package, ... of the real loader
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``TARGET`` found by the other finders."""

    fast3r_ns_hook = True  # marks the finder whichever copy of this module installed it

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not getattr(spec.loader, "fast3r_ns_hook", False):
                    spec.loader = _ExtendingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(getattr(finder, "fast3r_ns_hook", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
