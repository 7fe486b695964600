"""`--precision auto` in training: a timed trial picks the faster arithmetic, leaves no trace, and sticks on resume."""

import time
from dataclasses import replace

import pytest
import torch

from charrnn import checkpoint, precision, train
from charrnn.config import Precision
from charrnn.train import ModelOptions, run

from .conftest import tiny_job


@pytest.mark.parametrize("fp32_seconds, bf16_seconds, faster_is_bf16", [(0.03, 0.003, True), (0.003, 0.03, False)])
def test_the_speedup_is_fp32_time_over_bf16_time(fp32_seconds, bf16_seconds, faster_is_bf16):
    calls = []

    def step(bf16):
        calls.append(bf16)
        time.sleep(bf16_seconds if bf16 else fp32_seconds)

    speedup = precision.bf16_speedup(step, repeats=3)
    assert (speedup > 1) is faster_is_bf16
    assert calls == [False, True] * 4  # one warm-up run each, then timed runs that alternate


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU has native bf16 and record what the trial measured (it really runs both steps)."""
    seen = {}

    def fake_speedup(speedup):
        def measure(step, repeats=3):
            for bf16 in (False, True):
                step(bf16)
            seen["trials"] = seen.get("trials", 0) + 1
            return speedup
        monkeypatch.setattr(train, "bf16_speedup", measure)

    monkeypatch.setattr(train, "has_native_bf16", lambda device: True)
    return fake_speedup, seen


def dropout_job(corpus, out, **overrides):
    job = tiny_job(corpus, out, steps=12, **overrides)
    return replace(job, model=ModelOptions(hidden=16, embedding=8, dropout=0.3))  # dropout draws from the RNG


@pytest.mark.parametrize("speedup, expect_bf16", [(0.8, False), (1.6, True)])
def test_auto_trains_in_the_arithmetic_the_trial_found_faster(native_bf16, tiny_corpus, tmp_path, speedup, expect_bf16):
    fake_speedup, _ = native_bf16
    fake_speedup(speedup)
    lines = []
    run(dropout_job(tiny_corpus, tmp_path / "auto", precision="auto"), log=lines.append)
    assert checkpoint.load(tmp_path / "auto" / "latest.pt")["bf16"] is expect_bf16
    assert f"a timed step ran {speedup:.2f}x as fast in bf16 autocast as in fp32" in lines[-1]


def test_the_trial_leaves_no_trace_in_weights_or_random_stream(native_bf16, tiny_corpus, tmp_path):
    fake_speedup, _ = native_bf16
    fake_speedup(0.5)  # the trial runs, then picks fp32: the run must be the plain fp32 run exactly
    run(dropout_job(tiny_corpus, tmp_path / "auto", precision="auto"))
    run(dropout_job(tiny_corpus, tmp_path / "fp32", precision="fp32"))
    a, b = (checkpoint.load(tmp_path / name / "latest.pt") for name in ("auto", "fp32"))
    assert a["history"]["train"] == b["history"]["train"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_resumed_auto_run_keeps_its_arithmetic_without_a_new_trial(native_bf16, tiny_corpus, tmp_path):
    fake_speedup, seen = native_bf16
    fake_speedup(1.6)
    job = dropout_job(tiny_corpus, tmp_path / "run", precision="auto")
    run(replace(job, train=replace(job.train, steps=6)))
    fake_speedup(0.5)  # were it measured again, it would now pick fp32
    lines = []
    run(replace(job, resume=True, explicit=frozenset({"steps"})), log=lines.append)
    state = checkpoint.load(tmp_path / "run" / "latest.pt")
    assert state["step"] == 12 and state["bf16"] is True and seen["trials"] == 1
    assert "as before resuming" in lines[-1]


def test_bf16_training_learns(tiny_corpus, tmp_path):
    result = run(tiny_job(tiny_corpus, tmp_path / "bf16", steps=60, precision="bf16", lr=1e-2))
    losses = [loss for _, loss in result.history["train"]]
    assert checkpoint.load(tmp_path / "bf16" / "latest.pt")["bf16"] is True
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_means_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert precision.uses_bf16(Precision.AUTO, cpu) is native
    assert precision.uses_bf16(Precision.BF16, cpu) and not precision.uses_bf16(Precision.FP32, cpu)
