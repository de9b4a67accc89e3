"""Atomic output folders: everything is written to ``OUT.tmp-xxxx`` beside OUT and renamed at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def check_output_dir(output_dir: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """The absolute output folder, or an InputError if it exists (without overwrite) or would hold the inputs."""
    output_dir = Path(output_dir).expanduser().absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output-dir {output_dir} is a file, not a folder")
    if output_dir.exists() and not overwrite:
        raise InputError(f"--output-dir {output_dir} already exists: pass --overwrite to replace it")
    for source in inputs:
        source = Path(source).expanduser().absolute()
        if source == output_dir or output_dir in source.parents:
            raise InputError(f"--output-dir {output_dir} contains the input {source}: choose another output folder")
    return output_dir


@contextlib.contextmanager
def atomic_output_dir(output_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside ``output_dir``; on success it replaces ``output_dir``, on any error it goes.

    An existing ``output_dir`` is refused unless ``overwrite``; it is only removed once the new one is complete.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{output_dir.name}.tmp-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        if output_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{output_dir.name}.old-", dir=output_dir.parent))
            output_dir.rename(old / output_dir.name)
            staging.rename(output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
