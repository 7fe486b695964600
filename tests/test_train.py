import math
import os
import signal
from dataclasses import replace

import pytest
import torch

from charrnn import checkpoint
from charrnn.config import ModelConfig, Schedule, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.training import ModelOptions, _budget_note, lr_at, run

from .conftest import tiny_config, tiny_job


def weights(run_dir):
    return checkpoint.load(run_dir / "latest.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_tiny_model_memorises_a_repeated_string(memorised_run):
    state = checkpoint.load(memorised_run / "latest.pt")
    last_losses = [loss for _, loss in state["history"]["train"][-20:]]
    assert sum(last_losses) / len(last_losses) < 0.1  # nats/char; an untrained model starts near ln(29) = 3.4
    assert state["history"]["val"][-1][1] < 0.1


@pytest.mark.parametrize("segment_len", [0, 48])  # char-rnn's layout; shuffled segments of 3 windows (8 per pass)
def test_resuming_continues_the_run_exactly(tiny_corpus, tmp_path, segment_len):
    config = {"schedule": Schedule.CONSTANT, "segment_len": segment_len}
    job = tiny_job(tiny_corpus, tmp_path / "once", steps=30, **config)
    run(job)
    split = tiny_job(tiny_corpus, tmp_path / "twice", steps=10, **config)  # mid-segment, in the first pass
    run(split)
    run(replace(split, train=replace(split.train, steps=30), resume=True, explicit=frozenset({"steps"})))
    assert_same_weights(weights(tmp_path / "once"), weights(tmp_path / "twice"))


def test_resuming_with_dropout_and_weight_drop_restores_the_random_state(tiny_corpus, tmp_path):
    jobs = [replace(tiny_job(tiny_corpus, tmp_path / name, steps=s, schedule=Schedule.CONSTANT),
                    model=ModelOptions(hidden=16, embedding=8, dropout=0.3, weight_drop=0.3)) for name, s in (("a", 16), ("b", 8))]
    run(jobs[0])
    run(jobs[1])
    run(replace(jobs[1], train=replace(jobs[1].train, steps=16), resume=True, explicit=frozenset({"steps"})))
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_an_interrupted_run_resumed_with_the_same_budget_matches_an_uninterrupted_one(tiny_corpus, tmp_path):
    run(tiny_job(tiny_corpus, tmp_path / "whole", steps=20))

    def interrupt_at_step_7(progress):
        if progress.step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; the loop saves and stops at the step boundary

    job = tiny_job(tiny_corpus, tmp_path / "cut", steps=20)
    result = run(job, on_progress=interrupt_at_step_7)
    assert result.interrupted and result.steps == 7
    assert checkpoint.load(tmp_path / "cut" / "latest.pt")["step"] == 7
    run(replace(job, resume=True))
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_the_same_random_seed_gives_the_same_run(tiny_corpus, tmp_path):
    run(tiny_job(tiny_corpus, tmp_path / "a", steps=6))
    run(tiny_job(tiny_corpus, tmp_path / "b", steps=6))
    run(tiny_job(tiny_corpus, tmp_path / "c", steps=6, random_seed=1))
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["head.weight"], weights(tmp_path / "c")["head.weight"])


def test_checkpoint_records_what_the_issue_lists(tiny_corpus, tmp_path):
    run(tiny_job(tiny_corpus, tmp_path / "r", steps=10))
    state = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    for key in ("format_version", "model_config", "train_config", "vocab", "model", "optimizer", "step", "epoch",
                "rng", "history", "corpus", "hidden"):
        assert key in state, key
    assert state["corpus"]["path"] == str(tiny_corpus.resolve())
    assert len(state["corpus"]["fingerprint"]) == 64
    assert state["step"] == 10 and state["history"]["val"][-1][0] == 10


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
    job = tiny_job(tiny_corpus, tmp_path / "r", steps=10, eval_every=5)
    run(job)
    good = checkpoint.load(tmp_path / "r" / "latest.pt")["model"]
    nan_job = replace(job, train=replace(job.train, steps=40, lr=1e6, grad_clip=0.0), resume=True,
                      explicit=frozenset({"steps", "lr", "grad_clip"}))
    with pytest.raises(CharRNNError, match="diverged"):
        run(nan_job)
    after = checkpoint.load(tmp_path / "r" / "latest.pt")
    for value in after["model"].values():
        assert torch.isfinite(value).all()
    assert after["step"] >= 10
    assert good.keys() == after["model"].keys()


def test_warm_up_then_cosine_decay_to_the_final_fraction():
    config = TrainConfig(lr=1.0, warmup_steps=10, final_lr_fraction=0.05)
    assert lr_at(0, config, 0.0) == pytest.approx(0.1)
    assert lr_at(10, config, 0.0) == pytest.approx(1.0)
    assert lr_at(50, config, 0.5) == pytest.approx(0.525)
    assert lr_at(99, config, 1.0) == pytest.approx(0.05)
    assert lr_at(99, replace(config, schedule=Schedule.CONSTANT), 1.0) == 1.0


def test_a_new_run_refuses_to_overwrite_an_existing_one(tiny_corpus, tmp_path):
    run(tiny_job(tiny_corpus, tmp_path / "r", steps=2))
    with pytest.raises(CharRNNError, match="--resume"):
        run(tiny_job(tiny_corpus, tmp_path / "r", steps=2))


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folders_behind(tiny_corpus, tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text" * 10)
    with pytest.raises(CharRNNError, match="utf-8"):
        run(tiny_job(binary, tmp_path / "runs" / "new", steps=2))
    assert not (tmp_path / "runs").exists()  # runs/new, and runs/ that it made, went again
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(CharRNNError, match="utf-8"):
        run(tiny_job(binary, mine, steps=2))
    assert mine.is_dir()  # a folder the user made stays
    run(tiny_job(tiny_corpus, tmp_path / "runs" / "good", steps=2))
    assert (tmp_path / "runs" / "good" / "latest.pt").is_file()


def test_resume_refuses_a_different_corpus_unless_forced(tiny_corpus, tmp_path):
    job = tiny_job(tiny_corpus, tmp_path / "r", steps=4)
    run(job)
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text()[::-1])
    moved = replace(job, corpus_path=other, resume=True, train=replace(job.train, steps=6), explicit=frozenset({"steps"}))
    with pytest.raises(CharRNNError, match="--force"):
        run(moved)
    assert run(replace(moved, force=True)).steps == 6
    alien = tmp_path / "alien.txt"
    alien.write_text("ZZZZ QQQQ " * 200)
    with pytest.raises(CharRNNError, match="vocabulary differs"):
        run(replace(moved, corpus_path=alien, force=True))


def test_the_validation_split_is_kept_on_resume_and_older_runs_keep_theirs_at_the_end(tiny_corpus, tmp_path):
    job = tiny_job(tiny_corpus, tmp_path / "r", steps=4)
    run(job)
    saved = checkpoint.load(tmp_path / "r" / "latest.pt")
    assert saved["train_config"]["val_split"] == "spread" and saved["corpus"]["val_split"] == "spread"
    moved = replace(job, resume=True, train=replace(job.train, steps=6, val_split="end"),
                    explicit=frozenset({"steps", "val_split"}))
    with pytest.raises(CharRNNError, match="--val-split differs"):
        run(moved)
    older = {k: v for k, v in saved["train_config"].items() if k != "val_split"}  # saved before the option existed
    assert TrainConfig.from_dict(older).val_split.value == "end"


def test_the_reading_order_is_kept_on_resume_and_older_runs_keep_char_rnn_s(tiny_corpus, tmp_path):
    job = tiny_job(tiny_corpus, tmp_path / "r", steps=4, segment_len=48)
    run(job)
    saved = checkpoint.load(tmp_path / "r" / "latest.pt")
    assert saved["train_config"]["segment_len"] == 48
    moved = replace(job, resume=True, train=replace(job.train, steps=6, segment_len=0),
                    explicit=frozenset({"steps", "segment_len"}))
    with pytest.raises(CharRNNError, match="--segment-len differs"):
        run(moved)
    older = {k: v for k, v in saved["train_config"].items() if k != "segment_len"}  # saved before the option existed
    assert TrainConfig.from_dict(older).segment_len == 0


def test_a_run_keeps_its_optimiser_settings_on_resume_and_older_runs_keep_plain_adam_and_their_decay_floor(
        tiny_corpus, tmp_path):
    job = tiny_job(tiny_corpus, tmp_path / "r", steps=4)
    run(job)
    saved = checkpoint.load(tmp_path / "r" / "latest.pt")["train_config"]
    assert TrainConfig.from_dict(saved) == job.train  # every setting stored: a run resumes as it ran
    older = {k: v for k, v in saved.items() if k not in ("weight_decay", "final_lr_fraction")}  # before they existed
    assert (TrainConfig.from_dict(older).weight_decay, TrainConfig.from_dict(older).final_lr_fraction) == (0.0, 0.05)
    assert TrainConfig().weight_decay > 0 and TrainConfig().final_lr_fraction == 0.0  # today's defaults differ


def test_a_segment_shorter_than_a_window_is_refused():
    with pytest.raises(CharRNNError, match="--segment-len must be 0"):
        TrainConfig(seq_len=64, segment_len=32)


def test_epochs_budget_counts_passes_over_the_text(tiny_corpus, tmp_path):
    result = run(tiny_job(tiny_corpus, tmp_path / "r", steps=None, epochs=2))
    windows = (int(1800 * 0.9) // 4 - 1) // 16
    assert result.steps == math.ceil(2 * windows)


def test_a_nan_loss_stops_training_with_a_clear_message(tiny_corpus, tmp_path, monkeypatch):
    import torch.nn.functional as F

    real = F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 4 else loss

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    with pytest.raises(CharRNNError, match="nan nats/char.*diverged.*lower --lr"):
        run(tiny_job(tiny_corpus, tmp_path / "r", steps=10))


def test_a_full_disk_while_saving_is_a_clear_error_and_keeps_the_previous_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    job = tiny_job(tiny_corpus, tmp_path / "r", steps=10, eval_every=5)
    run(job)
    before = (tmp_path / "r" / "latest.pt").read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CharRNNError, match="no space left on the device.*the previous latest.pt is intact"):
        run(replace(job, train=replace(job.train, steps=20), resume=True, explicit=frozenset({"steps"})))
    assert (tmp_path / "r" / "latest.pt").read_bytes() == before
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_weight_decay_shrinks_weight_matrices_and_leaves_biases_alone():
    from charrnn.training import _adam

    model = CharRNN(tiny_config())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = _adam(model, 0.1, torch.device("cpu"), weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decay moves anything
    optimizer.step()
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if p.dim() >= 2 else before[name]
        assert torch.allclose(p.detach(), expected), name


def test_a_run_saved_with_a_one_group_optimizer_resumes_exactly(tiny_corpus, tmp_path):
    """Checkpoints written before weight decay kept Adam's state as one group over the parameters in order."""
    config = {"schedule": Schedule.CONSTANT}
    run(tiny_job(tiny_corpus, tmp_path / "once", steps=20, **config))
    split = tiny_job(tiny_corpus, tmp_path / "twice", steps=10, **config)
    run(split)
    latest = tmp_path / "twice" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    params = list(CharRNN(ModelConfig.from_dict(state["model_config"])).parameters())
    order = [i for i, p in enumerate(params) if p.dim() >= 2] + [i for i, p in enumerate(params) if p.dim() < 2]
    saved = state["optimizer"]
    group = {**saved["param_groups"][0], "params": list(range(len(params)))}
    group.pop("decoupled_weight_decay", None)
    state["optimizer"] = {"state": {old: saved["state"][new] for new, old in enumerate(order)}, "param_groups": [group]}
    torch.save(state, latest)
    run(replace(split, train=replace(split.train, steps=20), resume=True, explicit=frozenset({"steps"})))
    assert_same_weights(weights(tmp_path / "once"), weights(tmp_path / "twice"))


def test_a_run_with_an_odd_embedding_resumes_padded_to_even_and_continues_as_it_would_have(tiny_corpus, tmp_path):
    """Checkpoints from before session 32 embed in the alphabet's size, often odd (bf16's slow path on AMX): a resumed
    run pads the embedding and Adam's moments with a zero column that training keeps at zero."""
    odd, config = ModelOptions(hidden=16, embedding=7, dropout=0.0), {"schedule": Schedule.CONSTANT}
    run(replace(tiny_job(tiny_corpus, tmp_path / "whole", steps=20, **config), model=odd))
    split = replace(tiny_job(tiny_corpus, tmp_path / "split", steps=8, **config), model=odd)
    run(split)
    for steps in (14, 20):  # the second resume is of an even checkpoint, with the odd --embedding the run was given
        run(replace(split, train=replace(split.train, steps=steps), resume=True, explicit=frozenset({"steps", "embedding"})))
    state = checkpoint.load(tmp_path / "split" / "latest.pt")
    assert state["model_config"]["embedding"] == 8
    reading = ("embed.weight", "layers.0.weight_ih_l0", "layers.1.weight_ih_l0")
    whole = weights(tmp_path / "whole")
    for name, tensor in state["model"].items():
        if name in reading:
            assert not tensor[:, 7].any(), name
            tensor = torch.cat([tensor[:, :7], tensor[:, 8:]], 1)
        assert torch.allclose(tensor, whole[name], atol=1e-5), name


def test_the_default_embedding_is_one_hot_sized_rounded_up_to_even_at_most_128_and_an_explicit_size_wins():
    # a large alphabet (Python's sources: about 220 characters) embeds in 128 dimensions, since the width feeds every
    # layer; an odd width would send bf16 steps down oneDNN's slow path
    assert ModelOptions().for_vocab(64).embedding == 64
    assert ModelOptions().for_vocab(65).embedding == 66
    assert ModelOptions().for_vocab(127).embedding == 128
    assert ModelOptions().for_vocab(220).embedding == 128
    assert ModelOptions(embedding=201).for_vocab(220).embedding == 201


def test_the_first_log_line_names_a_race_between_budgets_only_when_there_are_two():
    alone = _budget_note(TrainConfig(minutes=120), None)
    assert alone.startswith("budget 120 min of wall clock (the clock sets") and "whichever" not in alone
    both = _budget_note(TrainConfig(minutes=5), 1_000)
    assert both.startswith("budget 5 min of wall clock or 1,000 steps, whichever ends first (")
    assert _budget_note(TrainConfig(steps=1_000), 1_000) == "budget 1,000 steps (the same seed repeats this run exactly)"
