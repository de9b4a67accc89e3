"""``python tests/reliability_runner.py process ARGS...``: the fast3r-ns CLI in a child process, with synthetic
cameras instead of the network, for the tests that signal a run, drop privileges or fill a disk.

Environment: RELIABILITY_READY (a file created once the network would run), RELIABILITY_SLEEP (seconds the
stand-in network then sleeps).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_cameras import fake_reconstruct  # noqa: E402

import fast3r_ns.process  # noqa: E402
from fast3r_ns.cli import entrypoint  # noqa: E402

FAKE_FFMPEG = """#!/bin/sh
case "$(basename "$0")" in
  ffprobe) echo 100 ;;
  ffmpeg) echo $$ > "$FAKE_FFMPEG_PID"; exec sleep 120 ;;
esac
"""


def fake_ffmpeg(folder: Path, pid_file: Path) -> dict[str, str]:
    """Put an ffprobe (100 frames) and an ffmpeg (writes its pid to ``pid_file``, then sleeps) into ``folder``;
    return the environment variables that make a child use them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ffmpeg", "ffprobe"):
        (folder / name).write_text(FAKE_FFMPEG)
        (folder / name).chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "FAKE_FFMPEG_PID": str(pid_file)}


def slow_reconstruct(*args, **kwargs):
    ready = os.environ.get("RELIABILITY_READY")
    if ready:
        Path(ready).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("RELIABILITY_SLEEP", "0")))
    return fake_reconstruct(*args, **kwargs)


if __name__ == "__main__":
    fast3r_ns.process.process = functools.partial(
        fast3r_ns.process.process, predictor=object(), reconstruct_fn=slow_reconstruct
    )
    entrypoint(sys.argv[1:])
