"""SIGINT, SIGTERM and SIGHUP: staging folder removed, ffmpeg stopped, one line, exit 128 + signal (issue #16, 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_runner import fake_ffmpeg
from synthetic_cameras import write_images

RUNNER = Path(__file__).parent / "reliability_runner.py"


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), process.communicate()[0] if process.poll() is not None else "timed out"


def _start(tmp_path: Path, data: Path, env: dict[str, str]) -> subprocess.Popen:
    args = [sys.executable, str(RUNNER), "process", "--data", str(data), "--output-dir", str(tmp_path / "out")]
    args += ["--image-size", "64", "--num-downscales", "1"]
    env = {**os.environ, "NO_COLOR": "1", **env}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_during_the_network_pass(tmp_path, signum, code):
    write_images(tmp_path / "in", [(64, 48)] * 3)
    ready = tmp_path / "ready"
    run = _start(tmp_path, tmp_path / "in", {"RELIABILITY_READY": str(ready), "RELIABILITY_SLEEP": "60"})
    _wait_for(ready, run)
    assert any(p.name.startswith("out.tmp-") for p in tmp_path.iterdir())  # the staging folder exists now
    started = time.monotonic()
    run.send_signal(signum)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == code, output
    assert time.monotonic() - started < 20  # stopped the sleeping "network", did not wait it out
    assert output.strip().splitlines()[-1] == "Interrupted: nothing was written"
    assert "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "ready"]  # no output, staging or lock


def test_sigterm_during_video_extraction_stops_ffmpeg(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 100)
    pid_file = tmp_path / "ffmpeg.pid"
    run = _start(tmp_path, video, fake_ffmpeg(tmp_path / "bin", pid_file))
    _wait_for(pid_file, run)
    time.sleep(0.2)  # the fake ffmpeg has exec'd its sleep
    ffmpeg_pid = int(pid_file.read_text())
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 143, output
    assert "Interrupted: nothing was written" in output and "Traceback" not in output
    with pytest.raises(ProcessLookupError):
        os.kill(ffmpeg_pid, 0)  # killed and reaped, not orphaned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "clip.mp4", "ffmpeg.pid"]


STUCK_CLEANUP = """
import sys, time
from pathlib import Path
from fast3r_ns import interrupts

staging, ready = Path(sys.argv[1]), Path(sys.argv[2])
staging.mkdir()
interrupts.remove_on_hard_exit(staging)
with interrupts.handle_interrupts():
    try:
        ready.write_text("1")
        time.sleep(60)
    finally:
        ready.write_text("2")
        time.sleep(60)  # a cleanup that does not finish
"""


def test_second_signal_during_a_stuck_cleanup_exits_at_once(tmp_path):
    staging, ready = tmp_path / "out.tmp-x", tmp_path / "ready"
    command = [sys.executable, "-c", STUCK_CLEANUP, str(staging), str(ready)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(ready, run)
    run.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while ready.read_text() != "2" and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=20)
    assert run.returncode == 143 and output.strip() == "Interrupted: nothing was written", output
    assert not staging.exists()


DURING_THE_RENAME = """
import os, signal, sys
from pathlib import Path
from fast3r_ns import interrupts

done = Path(sys.argv[1])
with interrupts.handle_interrupts():
    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the final renames
        done.write_text("renamed")
        interrupts.completed(done)
    done.write_text("not reached: the signal acts here")
"""


def test_signal_during_the_final_rename_waits_for_it(tmp_path):
    done = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", DURING_THE_RENAME, str(done)], capture_output=True, text=True)
    assert result.returncode == 143, result.stderr
    assert done.read_text() == "renamed"
    assert result.stderr.strip() == f"Interrupted: {done} was already complete"
