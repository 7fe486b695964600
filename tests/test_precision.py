"""`--precision`: auto decides from the hardware and the shapes alone, never from a clock; bf16 where it cannot run
is a clear error; a resumed run keeps its arithmetic."""

import itertools
import random
import time
from dataclasses import replace

import pytest
import torch

import charrnn
from charrnn import checkpoint, devices
from charrnn.config import Cell, ModelConfig, Precision
from charrnn.errors import CharRNNError
from charrnn.training import ModelOptions, run

from .conftest import tiny_job

CPU = torch.device("cpu")
BF16_LSTM_RUNS = devices.bf16_runs("cpu", Cell.LSTM)
needs_bf16_lstm = pytest.mark.skipif(not BF16_LSTM_RUNS, reason="this CPU cannot run oneDNN's bf16 LSTM (no AVX-512)")


def shape(cell: Cell, hidden: int, embedding: int = 114) -> ModelConfig:
    return ModelConfig(vocab_size=100, cell=cell, hidden=hidden, embedding=embedding)


@pytest.fixture
def sound_gradients(monkeypatch):
    """Pretend bf16 gradients are sound for every shape, so that a test sees the speed rule alone."""
    monkeypatch.setattr(devices, "bf16_gradients_sound", lambda *shape: True)


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU multiplies bf16 natively (whether or not it does)."""
    monkeypatch.setattr(devices, "has_native_bf16", lambda device: True)


def test_the_rule_keeps_wide_lstms_at_small_batches_in_fp32_without_amx():
    assert devices.rule_prefers_bf16(Cell.LSTM, 256, 32)  # the default model: 1.42x in bf16 (bench/RESULTS.md)
    assert devices.rule_prefers_bf16(Cell.LSTM, 512, 64)
    assert not devices.rule_prefers_bf16(Cell.LSTM, 1024, 32)  # 0.89-0.92x in bf16 (a Zen 5)
    assert devices.rule_prefers_bf16(Cell.LSTM, 1024, 128)  # 1.80x
    assert devices.rule_prefers_bf16(Cell.GRU, 1024, 32)  # 1.54x


def test_the_rule_takes_bf16_for_every_shape_on_a_cpu_with_amx():
    # an Intel Xeon with AMX: 2x1024 at batch 32 1.7-2.5x as fast in bf16, 2x1536 at 16 0.94-1.55x (session 42)
    for cell, hidden, batch in itertools.product(list(Cell), (256, 1024, 1536), (16, 32, 128)):
        assert devices.rule_prefers_bf16(cell, hidden, batch, amx=True)


@pytest.mark.parametrize("amx", [False, True])
@pytest.mark.parametrize("cell", list(Cell))
def test_auto_on_a_native_bf16_cpu_follows_the_rule_where_bf16_runs(native_bf16, sound_gradients, monkeypatch, cell,
                                                                    amx):
    monkeypatch.setattr(devices, "has_amx", lambda: amx)
    for hidden, batch in itertools.product((256, 1024), (32, 128)):
        bf16, why = devices.choose_bf16(Precision.AUTO, CPU, shape(cell, hidden), batch_size=batch)
        expected = devices.bf16_runs("cpu", cell) and (amx or not (cell is Cell.LSTM and hidden == 1024 and batch == 32))
        assert bf16 is expected and why.startswith("bf16" if expected else "fp32")
        if not expected and devices.bf16_runs("cpu", cell):  # the shape rule's choice says which CPUs it is for
            assert why == "fp32 (auto: a lstm of 1024 units at batch 32 trains faster in fp32 on a CPU without AMX)"


@pytest.mark.parametrize("cell", list(Cell))
def test_auto_on_a_gpu_takes_bf16_only_for_the_widest_layers_or_large_batches(monkeypatch, cell):
    monkeypatch.setattr(devices, "has_native_bf16", lambda device: True)
    monkeypatch.setattr(devices, "bf16_runs", lambda device_type, cell: True)  # as on a GPU; none is needed here
    monkeypatch.setattr(devices, "bf16_gradients_sound", lambda *shape: True)
    gpu = torch.device("cuda")  # a device name only: nothing runs on it
    picks = {(hidden, batch): devices.choose_bf16(Precision.AUTO, gpu, shape(cell, hidden), batch_size=batch)
             for hidden in (384, 1024, 2048) for batch in (32, 128)}
    # whole training loops on an H200 (bench/RESULTS.md, session 37): fp32 1.2-1.6x as fast at 2x384-2x768, batch 32
    assert {shape for shape, (bf16, _) in picks.items() if bf16} == {(1024, 128), (2048, 32), (2048, 128)}
    assert picks[(384, 32)][1] == f"fp32 (auto: a {cell.value} of 384 units at batch 32 trains faster in fp32 on a GPU)"
    assert devices.choose_bf16(Precision.BF16, gpu, shape(cell, 384), batch_size=32)[0] is True  # as asked


def test_auto_is_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(devices, "has_native_bf16", lambda device: False)
    for cell in Cell:
        assert devices.choose_bf16(Precision.AUTO, CPU, shape(cell, 256), batch_size=32)[0] is False


def test_explicit_fp32_and_bf16_are_taken_as_asked():
    assert devices.choose_bf16(Precision.FP32, CPU, shape(Cell.LSTM, 256), batch_size=32)[0] is False
    assert devices.choose_bf16(Precision.BF16, CPU, shape(Cell.RNN, 256), batch_size=32)[0] is True


class _HalfAgainInBF16(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.5


class FaultyInBF16(torch.nn.RNN):
    """A stand-in for a faulty kernel: right outputs, but gradients half again too large under bf16 autocast."""

    def forward(self, x, hx=None):
        out, h = super().forward(x, hx)
        return (_HalfAgainInBF16.apply(out) if torch.is_autocast_enabled("cpu") else out), h


@pytest.fixture
def fresh_gradient_checks():
    devices.bf16_gradients_sound.cache_clear()  # it remembers each shape's answer for the process
    yield
    devices.bf16_gradients_sound.cache_clear()


def test_the_gradient_check_passes_a_sound_kernel_and_catches_a_faulty_one(fresh_gradient_checks, monkeypatch):
    before = torch.random.get_rng_state()
    reseeded = []  # a GPU's generators, which fork_rng(devices=[]) would not restore
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    assert devices.bf16_gradients_sound("cpu", Cell.RNN, 12, 16)  # bf16 RNNs run on every CPU
    assert torch.equal(torch.random.get_rng_state(), before)  # the check draws nothing from the run's stream
    assert reseeded == []
    devices.bf16_gradients_sound.cache_clear()
    monkeypatch.setattr(torch.nn, "RNN", FaultyInBF16)
    assert not devices.bf16_gradients_sound("cpu", Cell.RNN, 12, 16)


@pytest.mark.skipif(not (BF16_LSTM_RUNS and devices.has_amx() and torch.__version__.startswith("2.13.")),
                    reason="the fault is torch 2.13's oneDNN bf16 LSTM on a CPU with AMX")
def test_the_check_finds_torch_2_13s_fault_in_wide_lstms_on_a_cpu_with_amx(fresh_gradient_checks):
    # input gradients wholly wrong, weight gradients 20-25% off, from 1,024 units fed no wider an input (session 43)
    assert not devices.bf16_gradients_sound("cpu", Cell.LSTM, 114, 1024)
    assert not devices.bf16_gradients_sound("cpu", Cell.LSTM, 1024, 1024)
    assert devices.bf16_gradients_sound("cpu", Cell.LSTM, 1138, 1024)  # a skip layer's wider input: sound
    assert devices.bf16_gradients_sound("cpu", Cell.LSTM, 114, 768)
    bf16, why = devices.choose_bf16(Precision.AUTO, CPU, shape(Cell.LSTM, 1024), batch_size=32)
    assert not bf16 and "LSTM gradients are wrong on this cpu for a layer of 1024 units fed 114 inputs" in why


def test_auto_keeps_fp32_and_bf16_is_an_error_where_bf16_gradients_are_wrong(native_bf16, monkeypatch):
    monkeypatch.setattr(devices, "bf16_gradients_sound", lambda device_type, cell, width, hidden: width > hidden)
    model = shape(Cell.RNN, 1024)  # the first layer is fed 114 (faulty here), the second 1,138 (sound)
    bf16, why = devices.choose_bf16(Precision.AUTO, CPU, model, batch_size=32)
    assert not bf16 and why.startswith("fp32 (auto: bf16 RNN gradients are wrong on this cpu for a layer of 1024 "
                                       "units fed 114 inputs, a fault of torch")
    with pytest.raises(CharRNNError, match=r"^--precision bf16: bf16 RNN gradients are wrong .*; use --precision "
                                           r"fp32 or auto$"):
        devices.choose_bf16(Precision.BF16, CPU, model, batch_size=32)
    assert devices.choose_bf16(Precision.BF16, CPU, model, batch_size=32, backward=False)[0]  # outputs are right
    assert devices.choose_bf16(Precision.AUTO, CPU, shape(Cell.RNN, 100), batch_size=32)[0]  # every layer sound


def test_scoring_in_bf16_needs_sound_gradients_only_to_adapt(native_bf16, tiny_corpus, tmp_path, monkeypatch):
    job = tiny_job(tiny_corpus, tmp_path / "run", steps=2)
    run(replace(job, model=ModelOptions(cell=Cell.RNN, hidden=16, embedding=8)))
    monkeypatch.setattr(devices, "bf16_gradients_sound", lambda *shape: False)
    model = charrnn.load(tmp_path / "run")
    assert model.evaluate(tiny_corpus, precision="bf16").chars > 0
    with pytest.raises(CharRNNError, match="--precision bf16: bf16 RNN gradients are wrong"):
        model.evaluate(tiny_corpus, precision="bf16", dynamic=True)


def test_a_resumed_bf16_run_turns_to_fp32_where_bf16_gradients_are_wrong(native_bf16, tiny_corpus, tmp_path,
                                                                       monkeypatch):
    job = tiny_job(tiny_corpus, tmp_path / "run", steps=4, precision="auto")
    job = replace(job, model=ModelOptions(cell=Cell.RNN, hidden=16, embedding=8))
    run(job)
    assert checkpoint.load(tmp_path / "run" / "latest.pt")["bf16"] is True
    monkeypatch.setattr(devices, "bf16_gradients_sound", lambda *shape: False)
    lines = []
    run(replace(job, resume=True, train=replace(job.train, steps=6), explicit=frozenset({"steps"})), log=lines.append)
    state = checkpoint.load(tmp_path / "run" / "latest.pt")
    assert state["step"] == 6 and state["bf16"] is False
    assert "fp32 (auto: bf16 RNN gradients are wrong" in "\n".join(lines)


@pytest.mark.skipif(BF16_LSTM_RUNS, reason="this CPU runs bf16 LSTMs")
def test_bf16_where_the_cpu_cannot_run_it_is_a_clear_error(tiny_corpus, tmp_path):
    with pytest.raises(CharRNNError, match="--precision bf16: .*cannot run LSTM layers in bf16.*--precision fp32"):
        run(tiny_job(tiny_corpus, tmp_path / "r", precision="bf16"))
    assert not (tmp_path / "r" / "latest.pt").exists()


@pytest.fixture
def lying_clock(monkeypatch):
    """Every clock charrnn could read jumps by random amounts, from microseconds to hours: were any timing to feed
    a decision, two runs would decide differently."""
    def install(seed: int):
        rng = random.Random(seed)
        now = [1000.0]

        def clock():
            now[0] += rng.choice([1e-6, 1e-3, 0.5, 30.0, 3600.0]) * rng.random()
            return now[0]
        for name in ("perf_counter", "monotonic", "time"):
            monkeypatch.setattr(time, name, clock)
    return install


@pytest.mark.parametrize("cell", [Cell.LSTM, Cell.RNN])
def test_two_auto_runs_with_one_seed_give_identical_weights_whatever_the_clock_says(native_bf16, lying_clock,
                                                                                    tiny_corpus, tmp_path, cell):
    states = []
    for k in range(2):
        lying_clock(seed=k)
        job = tiny_job(tiny_corpus, tmp_path / f"run{k}", steps=12, precision="auto")
        run(replace(job, model=ModelOptions(cell=cell, hidden=16, embedding=8, dropout=0.3)))  # dropout draws
        states.append(checkpoint.load(tmp_path / f"run{k}" / "latest.pt"))
    a, b = states
    assert a["bf16"] == b["bf16"] and a["history"]["train"] == b["history"]["train"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_the_first_log_line_says_the_budget_and_whether_it_repeats(tiny_corpus, tmp_path):
    lines = []
    run(tiny_job(tiny_corpus, tmp_path / "steps", steps=3), log=lines.append)
    assert "budget 3 steps (the same seed repeats this run exactly)" in lines[0]
    lines.clear()
    run(replace(tiny_job(tiny_corpus, tmp_path / "minutes"), train=replace(tiny_job(tiny_corpus, tmp_path).train,
                                                                          steps=None, minutes=0.001)), log=lines.append)
    assert "0.001 min of wall clock" in lines[0] and "runs differ; --steps or --epochs repeat exactly" in lines[0]


def test_a_resumed_auto_run_keeps_the_arithmetic_its_checkpoint_records(native_bf16, tiny_corpus, tmp_path,
                                                                        monkeypatch):
    job = tiny_job(tiny_corpus, tmp_path / "run", steps=6, precision="auto")
    run(job)
    state = checkpoint.load(tmp_path / "run" / "latest.pt")
    chosen = state["bf16"]
    monkeypatch.setattr(devices, "rule_prefers_bf16", lambda *a, **k: not chosen)  # a rule that changed since
    lines = []
    run(replace(job, resume=True, train=replace(job.train, steps=8), explicit=frozenset({"steps"})), log=lines.append)
    state = checkpoint.load(tmp_path / "run" / "latest.pt")
    assert state["step"] == 8 and state["bf16"] is chosen and "as before resuming" in lines[-1]


@needs_bf16_lstm
def test_bf16_training_learns(tiny_corpus, tmp_path):
    result = run(tiny_job(tiny_corpus, tmp_path / "bf16", steps=60, precision="bf16", lr=1e-2))
    losses = [loss for _, loss in result.history["train"]]
    assert checkpoint.load(tmp_path / "bf16" / "latest.pt")["bf16"] is True
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_bf16_training_of_a_plain_rnn_learns(tiny_corpus, tmp_path):
    """bf16 autocast runs for plain RNN layers on every CPU, so the bf16 training path is tested here too."""
    job = tiny_job(tiny_corpus, tmp_path / "bf16", steps=60, precision="bf16", lr=1e-2)
    result = run(replace(job, model=ModelOptions(cell=Cell.RNN, hidden=32, embedding=8)))
    losses = [loss for _, loss in result.history["train"]]
    assert checkpoint.load(tmp_path / "bf16" / "latest.pt")["bf16"] is True
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


@pytest.mark.parametrize("native", [True, False])
def test_native_bf16_means_avx512_bf16_or_amx(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert devices.has_native_bf16(CPU) is native


@needs_bf16_lstm
def test_a_bf16_run_resumes_exactly_and_can_resume_in_fp32(tiny_corpus, tmp_path):
    # a bf16 run saves its streams' hidden state in bf16, which an fp32 LSTM refused (--resume --precision fp32)
    from .test_train import assert_same_weights, weights

    options = {"precision": "bf16", "schedule": "constant"}
    run(tiny_job(tiny_corpus, tmp_path / "once", steps=12, **options))
    split = tiny_job(tiny_corpus, tmp_path / "twice", steps=6, **options)
    run(split)
    run(replace(split, train=replace(split.train, steps=12), resume=True, explicit=frozenset({"steps"})))
    assert_same_weights(weights(tmp_path / "once"), weights(tmp_path / "twice"))
    run(replace(split, train=replace(split.train, steps=14, precision="fp32"), resume=True,
                explicit=frozenset({"steps", "precision"})))
    state = checkpoint.load(tmp_path / "twice" / "latest.pt")
    assert state["step"] == 14 and state["bf16"] is False


@pytest.mark.parametrize("amx", [True, False])
def test_an_odd_width_in_bf16_is_warned_on_a_cpu_with_amx_only(tiny_corpus, tmp_path, monkeypatch, amx):
    # oneDNN's AMX kernels take odd input widths on a path 1.7-3.2 times slower (bench/RESULTS.md, session 32);
    # AVX512-BF16 without AMX runs them at full speed (session 34), so a warning there would be false
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    def warnings_of(name, precision, **model):
        lines = []
        job = tiny_job(tiny_corpus, tmp_path / name, steps=2, precision=precision)
        run(replace(job, model=ModelOptions(cell=Cell.RNN, **model)), log=lines.append)
        return [line for line in lines if line.startswith("warning:")]

    odd = warnings_of("odd", "bf16", hidden=15, embedding=8)
    assert odd == (["warning: --hidden 15 is odd, and bf16 trains odd widths 1.7 to 3.2 times slower on a CPU with "
                    "AMX; an even size trains at full speed"] if amx else [])
    if amx:
        assert "--embedding 7 and --hidden 15 are odd" in warnings_of("both", "bf16", hidden=15, embedding=7)[0]
    assert warnings_of("fp32", "fp32", hidden=15, embedding=7) == []
    assert warnings_of("even", "bf16", hidden=16, embedding=8) == []
