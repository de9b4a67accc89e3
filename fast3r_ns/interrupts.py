"""SIGINT, SIGTERM and SIGHUP end a command-line run cleanly: one line, exit 128 + signal number.

``handle_interrupts()`` wraps a run: the first signal raises ``Interrupted`` in the main thread, so every
``finally`` (the staging folder's removal, ``subprocess.run`` killing ffmpeg) runs as for any error; a second
signal while that cleanup is stuck removes the registered folders, kills the registered children and exits at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MESSAGE = "Interrupted: nothing was written"

_cleanup_paths: set[Path] = set()
_children: set[subprocess.Popen] = set()
_received: list[int] = []
_complete: list[Path] = []
_deferring: list[bool] = []


class Interrupted(BaseException):
    """A signal asked the run to stop (a BaseException, like KeyboardInterrupt: ``except Exception`` lets it by)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def remove_on_hard_exit(path: Path) -> None:
    """Remove ``path`` if a second signal forces the exit before its normal cleanup ran."""
    _cleanup_paths.add(Path(path))


def forget(path: Path) -> None:
    _cleanup_paths.discard(Path(path))


@contextlib.contextmanager
def child(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Kill ``process`` on any exit of the block (an interrupt included) and on a forced exit."""
    _children.add(process)
    try:
        yield process
    finally:
        _children.discard(process)
        if process.poll() is None:
            process.kill()
            process.wait()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold an interrupt back for the block (the final renames): a signal arriving meanwhile acts after it.

    (A flag, not a blocked signal mask: a signal sent to the process may be delivered to any of its threads.)
    """
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
    if _received and not _deferring:
        raise Interrupted(_received[0])


def completed(path: Path) -> None:
    """Say that ``path`` is complete: an interrupt from now on says so instead of "nothing was written"."""
    _complete.append(Path(path))


def _message() -> str:
    return f"Interrupted: {_complete[-1]} was already complete" if _complete else MESSAGE


def _hard_exit(signum: int) -> None:
    for process in list(_children):
        with contextlib.suppress(OSError):
            process.kill()
    for path in list(_cleanup_paths):
        shutil.rmtree(path, ignore_errors=True)
    print(_message(), file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _handler(signum: int, frame) -> None:  # noqa: ARG001 - the signal module's signature
    _received.append(signum)
    if _deferring:
        return  # deferred() raises once its block is done
    if len(_received) > 1:
        _hard_exit(_received[0])
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_interrupts() -> Iterator[None]:
    """Install the handlers for the block (main thread only; elsewhere the block runs unchanged).

    ``Interrupted`` and ``KeyboardInterrupt`` leaving the block print ``MESSAGE`` (or that the output was already
    complete) and exit 128 + signal number.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    _received.clear()
    _complete.clear()
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as error:
        signum = error.signum if isinstance(error, Interrupted) else signal.SIGINT
        print(_message(), file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
