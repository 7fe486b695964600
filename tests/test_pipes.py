"""Real processes: pipes, signals, kills and concurrent runs, as a user's shell would produce them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint

CHARRNN = [sys.executable, "-m", "charrnn"]
TINY = ["--hidden", "16", "--embedding", "8", "--batch-size", "4", "--seq-len", "16", "--val-fraction", "0.1",
        "--device", "cpu", "--threads", "1"]


def env() -> dict:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def start_training(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*CHARRNN, "train", str(corpus), *TINY, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([*CHARRNN, "--version"], capture_output=True, text=True, env=env())
    assert result.returncode == 0 and result.stdout.startswith("charrnn ")


def test_sample_into_a_closed_pipe_exits_quietly(memorised_run):
    proc = subprocess.Popen([*CHARRNN, "sample", "-c", str(memorised_run), "--length", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    first = proc.stdout.read(50)
    proc.stdout.close()  # what `| head -c 50` does
    _, err = proc.communicate(timeout=60)
    assert len(first) == 50
    assert proc.returncode == 0 and b"Traceback" not in err and err == b""


def test_shell_pipeline_into_head_ends_quietly(memorised_run):
    result = subprocess.run(f"set -o pipefail; {sys.executable} -m charrnn sample -c {memorised_run} --length 100000 | head -c 100",
                            shell=True, capture_output=True, env=env(), executable="/bin/bash")
    assert result.returncode == 0 and len(result.stdout) == 100 and result.stderr == b""
    result.stdout.decode("utf-8")  # valid UTF-8


def test_ctrl_c_saves_says_where_exits_130_and_resume_continues(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    proc = start_training(tiny_corpus, out, "--steps", "1000000", "--eval-every", "5")
    wait_for(out / "latest.pt")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"saved" in err and b"--resume" in err and b"Traceback" not in err
    step = checkpoint.load(out / "latest.pt")["step"]
    resumed = subprocess.run([*CHARRNN, "train", str(tiny_corpus), "--out", str(out), "--resume", "--steps", str(step + 3),
                              "--quiet"], capture_output=True, env=env())
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(out / "latest.pt")["step"] == step + 3


def test_a_second_run_into_the_same_directory_is_refused_and_the_lock_dies_with_its_process(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    first = start_training(tiny_corpus, out, "--steps", "1000000", "--eval-every", "5")
    wait_for(out / "latest.pt")
    second = subprocess.run([*CHARRNN, "train", str(tiny_corpus), *TINY, "--out", str(out), "--steps", "3"],
                            capture_output=True, env=env())
    assert second.returncode == 1 and b"another charrnn train" in second.stderr
    first.kill()
    first.wait()
    third = subprocess.run([*CHARRNN, "train", str(tiny_corpus), "--out", str(out), "--resume", "--steps", "200", "--quiet"],
                           capture_output=True, env=env())
    assert third.returncode == 0, third.stderr


@pytest.mark.slow
def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    rng = random.Random(0)
    for attempt in range(8):
        extra = ["--resume"] if (out / "latest.pt").exists() else ["--force"]
        proc = start_training(tiny_corpus, out, "--steps", "1000000", "--eval-every", "1", *extra)
        if attempt == 0:
            wait_for(out / "latest.pt")
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        if (out / "latest.pt").exists():
            state = checkpoint.load(out / "latest.pt")  # never a torn file: the rename is atomic
            assert state["step"] >= 1
    final = subprocess.run([*CHARRNN, "train", str(tiny_corpus), "--out", str(out), "--resume", "--steps", "100000",
                            "--minutes", "0.05", "--quiet"], capture_output=True, env=env())
    assert final.returncode == 0, final.stderr
    assert not list(out.glob("*.tmp")), "stray temporary files survive the next run"
    torch.load(out / "latest.pt", weights_only=True)
