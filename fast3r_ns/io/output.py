"""Safe output folders: one writer at a time, written in ``OUT.tmp-xxxx`` beside OUT and renamed at the end.

Every folder we write holds ``MARKER_NAME``; ``--overwrite`` replaces only such a folder or an empty one, and all
path comparisons use resolved paths (``..`` and symlinks followed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import interrupts
from ..errors import InputError

MARKER_NAME = ".fast3r_ns"
"""JSON file in every output folder of ours (and its staging folder): what ``--overwrite`` may replace."""


def is_our_output(folder: Path) -> bool:
    """Whether ``folder`` holds our marker file (an earlier output, or a staging folder)."""
    try:
        return (Path(folder) / MARKER_NAME).is_file()
    except OSError:
        return False


def write_marker(folder: Path) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("fast3r-ns")
    except PackageNotFoundError:
        ours = "unknown"
    (Path(folder) / MARKER_NAME).write_text(json.dumps({"written_by": "fast3r-ns", "version": ours}) + "\n")


def _writable_reason(folder: Path) -> str | None:
    """Why nothing can be created in the nearest existing ancestor of ``folder``, or None."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"{existing} is on a read-only file system"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write into {existing}"
    return None


def _is_relative_to(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def check_output_dir(output_dir: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """The resolved output folder, or an InputError naming why it cannot be (re)placed there."""
    if str(output_dir).strip() in ("", "."):
        raise InputError(
            f"--output-dir '{output_dir}': give a new folder for the dataset (an empty value is often an unset "
            "shell variable; the current folder is never replaced)"
        )
    output_dir = Path(output_dir).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _is_relative_to(cwd, output_dir):
        raise InputError(f"--output-dir {output_dir} is the current folder or holds it: choose a new folder")
    for source in inputs:
        source = Path(source).expanduser().resolve()
        if _is_relative_to(source, output_dir):
            raise InputError(f"--output-dir {output_dir} contains the input {source}: choose another output folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output-dir {output_dir} is a file, not a folder")
    if os.path.ismount(output_dir):
        raise InputError(
            f"--output-dir {output_dir} is a mount point, which cannot be replaced by a rename: "
            f"pass a folder inside it (e.g. {output_dir / 'scene'})"
        )
    if output_dir.exists():
        if not overwrite:
            raise InputError(f"--output-dir {output_dir} already exists: pass --overwrite to replace it")
        if not is_our_output(output_dir) and _has_entries(output_dir):
            raise InputError(
                f"--output-dir {output_dir} holds files that fast3r-ns did not write (no {MARKER_NAME} marker): "
                "--overwrite replaces only an earlier output or an empty folder; choose another folder"
            )
    reason = _writable_reason(output_dir.parent)
    if reason is not None:
        raise InputError(f"--output-dir {output_dir}: cannot write there ({reason})")
    return output_dir


def _has_entries(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except OSError as error:
        raise InputError(f"--output-dir {folder}: cannot read it ({error.strerror})") from None


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[Path]:
    """Hold ``OUT.lock`` beside ``output_dir`` (non-blocking flock): a second writer gets an InputError."""
    lock_path = output_dir.with_name(f"{output_dir.name}.lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InputError(f"--output-dir {output_dir}: cannot create {lock_path} ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InputError(
                    f"--output-dir {output_dir}: another fast3r-ns run is writing it (it holds {lock_path})"
                ) from None
            raise
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(fd)


@contextlib.contextmanager
def atomic_output_dir(output_dir: Path, overwrite: bool = False, inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a staging folder beside ``output_dir`` (holding our marker); on success it replaces ``output_dir``,
    on any error or interrupt it goes.

    The output is locked for the whole block and checked again under the lock (``check_output_dir``); an earlier
    output is only removed once the new one is complete.
    """
    output_dir = check_output_dir(output_dir, overwrite, inputs)
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output-dir {output_dir}: cannot create {output_dir.parent} ({error.strerror})") from None
    with output_lock(output_dir):
        check_output_dir(output_dir, overwrite, inputs)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{output_dir.name}.tmp-", dir=output_dir.parent))
        except OSError as error:
            raise InputError(f"--output-dir {output_dir}: cannot write there ({error.strerror})") from None
        interrupts.remove_on_hard_exit(staging)
        try:
            umask = os.umask(0)
            os.umask(umask)
            staging.chmod(0o777 & ~umask)
            write_marker(staging)
            yield staging
            with interrupts.deferred():  # a signal now would leave neither the old output nor the new one
                _replace(staging, output_dir)
                interrupts.completed(output_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            interrupts.forget(staging)


def _replace(staging: Path, output_dir: Path) -> None:
    """Rename ``staging`` to ``output_dir``; an existing ``output_dir`` is moved aside first and restored on failure."""
    if not output_dir.exists():
        staging.rename(output_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{output_dir.name}.old-", dir=output_dir.parent))
    try:
        output_dir.rename(old / output_dir.name)
        try:
            staging.rename(output_dir)
        except OSError:
            (old / output_dir.name).rename(output_dir)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
