import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import charrnn
from charrnn import checkpoint, kernels
from charrnn.cli import app
from charrnn.config import EvalConfig
from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalResult, dynamic_losses_per_char, dynamic_step_losses, fixed_share, losses_per_char, stream_layout
from charrnn.model import CharRNN

from .conftest import TINY_TEXT, tiny_config


def test_bits_and_perplexity_follow_from_nats_exactly():
    result = EvalResult(nats_per_char=1.2345, chars=10, seconds=1.0)
    assert result.bits_per_char == 1.2345 / math.log(2)
    assert result.perplexity == math.exp(1.2345)


def test_every_target_is_scored_exactly_once_whatever_the_layout():
    for n, streams, burn_in in [(2, 4, 8), (11, 3, 2), (1000, 7, 30), (999, 64, 256)]:
        index, _, scored = stream_layout(n, streams, burn_in)
        assert sorted(index[scored].tolist()) == list(range(n - 1))


def test_many_streams_score_close_to_one_stream(memorised_run):
    model, _ = checkpoint.restore_model(checkpoint.load(memorised_run / "best.pt"))
    vocab = checkpoint.load(memorised_run / "best.pt")["vocab"]
    ids = torch.tensor([vocab.index(c) for c in TINY_TEXT])
    one = losses_per_char(model, ids, config=EvalConfig(streams=1, burn_in=64)).mean()
    many = losses_per_char(model, ids, config=EvalConfig(streams=16, burn_in=32, window=7)).mean()
    assert abs(float(one) - float(many)) < 0.05


def test_one_stream_scores_like_the_plain_forward_pass():
    torch.manual_seed(0)
    model = CharRNN(tiny_config()).eval()
    ids = torch.randint(0, 29, (300,))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        reference = torch.nn.functional.cross_entropy(logits[0], ids[1:], reduction="none")
    assert torch.allclose(losses_per_char(model, ids, config=EvalConfig(streams=1, window=50)), reference, atol=1e-5)


def test_a_memorised_training_string_scores_close_to_its_training_loss(memorised_run, runner, tmp_path):
    path = tmp_path / "same.txt"
    path.write_text(TINY_TEXT)
    result = runner.invoke(app, ["eval", str(path), "--checkpoint", str(memorised_run), "--json"])
    assert result.exit_code == 0, result.stderr
    train_loss = checkpoint.load(memorised_run / "best.pt")["history"]["train"][-1][1]
    assert json.loads(result.stdout)["nats_per_char"] == pytest.approx(train_loss, abs=0.1)


def test_eval_takes_several_dynamic_steps_and_reports_each(memorised_run, runner):
    result = runner.invoke(app, ["eval", "--checkpoint", str(memorised_run), "--json", "--dynamic",
                                 "--dynamic-lr", "1e-3", "--dynamic-lr", "3e-3"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(step["lr"], step["window"]) for step in report["dynamic_steps"]] == [(1e-3, 64), (3e-3, 64)]
    result = runner.invoke(app, ["eval", "--checkpoint", str(memorised_run), "--json", "--dynamic", "--dynamic-lr", "1e-3",
                                 "--dynamic-lr", "3e-3", "--dynamic-window", "64", "--dynamic-window", "8"])
    assert result.exit_code == 0, result.stderr
    assert [(step["lr"], step["window"]) for step in json.loads(result.stdout)["dynamic_steps"]] == [(1e-3, 64), (3e-3, 8)]
    result = runner.invoke(app, ["eval", "--checkpoint", str(memorised_run), "--dynamic", "--dynamic-lr", "0"])
    assert result.exit_code == 1 and "--dynamic-lr must be greater than 0" in result.stderr
    result = runner.invoke(app, ["eval", "--checkpoint", str(memorised_run), "--dynamic", "--dynamic-window", "8",
                                 "--dynamic-window", "16", "--dynamic-window", "32"])
    assert result.exit_code == 1 and "got 3 windows for 2 steps" in result.stderr and "Traceback" not in result.stderr


def test_json_has_exactly_the_documented_keys_and_types(memorised_run, runner):
    result = runner.invoke(app, ["eval", "--checkpoint", str(memorised_run), "--json", "--dynamic"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    types = {"nats_per_char": float, "bits_per_char": float, "perplexity": float, "chars": int, "unknown_chars": int,
             "chars_per_second": float, "checkpoint": str, "file": str, "static_bits_per_char": float, "dynamic_steps": list}
    assert set(report) == set(types)
    for key, kind in types.items():
        assert isinstance(report[key], kind), key
    assert [(step["lr"], step["window"]) for step in report["dynamic_steps"]] == [(3e-4, 64), (1.5e-3, 16)]  # the default pair
    assert all(set(step) == {"lr", "window", "bits_per_char"} and isinstance(step["bits_per_char"], float)
               for step in report["dynamic_steps"])
    assert report["chars"] == int(len(TINY_TEXT) * 0.1) - 1  # the validation split, all of it scored


def test_without_a_file_eval_scores_the_validation_split_the_run_recorded(tmp_path):
    from charrnn.data import fingerprint_file, read_corpus
    from charrnn.evaluate import TextSource

    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i}: {TINY_TEXT[i % 50:][:30]}\n" for i in range(500)))  # not periodic
    corpus = read_corpus(path)
    record = {"path": str(path), "fingerprint": fingerprint_file(path), "chars": len(corpus.ids), "val_fraction": 0.1}
    for recorded, spread in ((None, False), ("end", False), ("spread", True)):  # None: a run from before val_split
        source = TextSource(None, {**record, **({"val_split": recorded} if recorded else {})})
        (scored, _), = list(source.chunks(corpus.vocab, strict=False))
        assert torch.equal(scored, corpus.split(0.1, spread=spread)[1])
    assert not torch.equal(corpus.split(0.1, spread=True)[1], corpus.split(0.1, spread=False)[1])


def test_unknown_characters_are_counted_and_skipped_or_refused_with_strict(memorised_run, runner, tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text("the quick brown FOX jumps over the lazy dog.\n" * 3)
    result = runner.invoke(app, ["eval", str(path), "--checkpoint", str(memorised_run), "--json"])
    report = json.loads(result.stdout)
    assert report["unknown_chars"] == 9 and report["chars"] == len(path.read_text()) - 9 - 1
    strict = runner.invoke(app, ["eval", str(path), "--checkpoint", str(memorised_run), "--strict"])
    assert strict.exit_code == 1 and "'F'" in strict.stderr and "--strict" in strict.stderr and strict.stdout == ""


def test_eval_of_dash_scores_standard_input_as_it_would_the_file(memorised_run, runner, tmp_path):
    path = tmp_path / "f.txt"
    path.write_text(TINY_TEXT)
    from_file = json.loads(runner.invoke(app, ["eval", str(path), "-c", str(memorised_run), "--json"]).stdout)
    piped = runner.invoke(app, ["eval", "-", "-c", str(memorised_run), "--json"], input=TINY_TEXT)
    assert piped.exit_code == 0, piped.stderr
    timing = {"file": None, "seconds": None, "chars_per_second": None}
    assert {**json.loads(piped.stdout), **timing} == {**from_file, **timing}
    empty = runner.invoke(app, ["eval", "-", "-c", str(memorised_run)], input="")
    assert empty.exit_code == 1 and "standard input: the file is empty" in empty.stderr
    assert "not standard input" in runner.invoke(app, ["train", "-", "--steps", "2"], input=TINY_TEXT).stderr


@pytest.mark.parametrize("content, message", [("", "empty"), ("ZZZZ", "none of its characters"), ("t", "at least 2 characters"),
                                              ("tZZ", "at least 2 characters")])
def test_an_empty_or_unknown_file_is_an_error(memorised_run, runner, tmp_path, content, message):
    path = tmp_path / "f.txt"
    path.write_text(content)
    result = runner.invoke(app, ["eval", str(path), "--checkpoint", str(memorised_run)])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # no progress bar before the error


@pytest.mark.parametrize("args, message", [(["--streams", "0"], "--streams"), (["--dynamic", "--dynamic-lr", "0"], "--dynamic-lr"),
                                           (["--dynamic", "--dynamic-window", "8", "--dynamic-window", "8", "--dynamic-window", "8"],
                                            "3 windows for 2 steps"),
                                           (["--threads", "0"], "--threads")])
def test_bad_eval_options_get_one_clear_line(memorised_run, runner, tmp_path, args, message):
    path = tmp_path / "f.txt"
    path.write_text(TINY_TEXT)
    result = runner.invoke(app, ["eval", str(path), "--checkpoint", str(memorised_run), *args])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_dynamic_evaluation_never_looks_ahead():
    torch.manual_seed(0)
    model = CharRNN(tiny_config())
    ids = torch.randint(0, 29, (400,))
    changed = ids.clone()
    changed[250:] = torch.randint(0, 29, (150,))
    # One adapting copy; the mixture of two; two with their own windows, one not dividing the other, so its
    # segments straddle the blocks the copies advance by.
    for steps, windows in (((0.05,), 16), ((0.01, 0.05), 16), ((0.01, 0.05), (16, 7))):
        config = EvalConfig(dynamic=True, dynamic_lr=steps, dynamic_window=windows)
        a = dynamic_losses_per_char(model, ids, config=config)
        b = dynamic_losses_per_char(model, changed, config=config)
        assert torch.equal(a[:249], b[:249])  # entry i scores ids[i + 1]: everything before position 250 is unchanged
        assert not torch.equal(a[249:], b[249:])


def test_each_step_adapts_its_own_copy_and_a_mixture_of_one_step_is_that_step():
    torch.manual_seed(0)
    model = CharRNN(tiny_config())
    ids = torch.randint(0, 29, (300,))
    for windows in ((16, 16), (16, 7)):  # the same window, and each copy its own
        both = dynamic_step_losses(model, ids, config=EvalConfig(dynamic=True, dynamic_lr=(0.01, 0.05), dynamic_window=windows))
        for k, lr in enumerate((0.01, 0.05)):
            alone = dynamic_losses_per_char(model, ids, config=EvalConfig(dynamic=True, dynamic_lr=lr, dynamic_window=windows[k]))
            assert torch.equal(both[k], alone)  # the copies never share weights or optimiser state
        assert not torch.equal(both[0], both[1])
    assert EvalConfig(dynamic_lr=1e-3).dynamic_lr == (1e-3,)
    assert EvalConfig(dynamic_lr=(1e-3, 2e-3), dynamic_window=32).dynamic_window == (32, 32)  # one window: every copy's
    # No window given: the default pair keeps its own windows, steps a user chooses get 64 each.
    assert EvalConfig().dynamic_window == EvalConfig(dynamic_lr=(3e-4, 1.5e-3)).dynamic_window == (64, 16)
    assert EvalConfig(dynamic_lr=1.5e-3).dynamic_window == (64,)


def test_dynamic_evaluation_adapts_through_layers_that_refuse_a_backward_in_eval_mode():
    """cuDNN runs an RNN's backward only in training mode; dynamic evaluation must still score as before, with the
    model's dropout off (found on an H200, session 36)."""

    class CudnnLikeLSTM(torch.nn.LSTM):
        def forward(self, x, state=None):
            out, new_state = super().forward(x, state)
            if torch.is_grad_enabled() and not self.training:  # what cuDNN raises at backward, raised at once
                raise RuntimeError("cudnn RNN backward can only be called in training mode")
            return out, new_state

    torch.manual_seed(0)
    plain = CharRNN(tiny_config(dropout=0.5, weight_drop=0.5)).eval()
    strict = CharRNN(plain.config, layer_type=lambda name: CudnnLikeLSTM if name == "LSTM" else kernels.layer(name))
    strict.load_state_dict(plain.state_dict())
    strict.eval()
    ids = torch.randint(0, 29, (200,))
    config = EvalConfig(dynamic=True, dynamic_lr=0.01, dynamic_window=16)
    expected = dynamic_losses_per_char(plain, ids, config=config)
    assert torch.equal(dynamic_losses_per_char(strict, ids, config=config), expected)
    assert torch.equal(dynamic_losses_per_char(plain, ids, config=config), expected)  # no dropout: nothing random


def test_fixed_share_follows_whichever_predictor_is_better_now():
    good, bad = torch.full((500,), 0.5), torch.full((500,), 3.0)
    losses = torch.stack([torch.cat([good, bad]), torch.cat([bad, good])])  # the better one switches halfway
    bayes = fixed_share(losses, 0.0).double().sum()
    closed_form = -torch.logsumexp(-losses.double().sum(1), 0) + math.log(2)  # Bayes: -log(mean of exp(-total))
    assert bayes.item() == pytest.approx(closed_form.item(), abs=1e-3)  # exact but for float32 per-char rounding
    switching = fixed_share(losses, 0.01).double().sum()
    assert switching < bayes - 500  # Bayes stays with the first predictor; fixed share moves within a few chars
    assert switching < losses.double().sum(1).min() - 500
    assert torch.equal(fixed_share(losses[:1], 0.01), losses[0])  # one predictor: its own losses, exactly
    later_changed = losses.clone()
    later_changed[:, 700:] = 9.0
    assert torch.equal(fixed_share(losses, 0.01)[:700], fixed_share(later_changed, 0.01)[:700])  # no look-ahead


@pytest.mark.parametrize("options, message", [({"dynamic_lr": ()}, "--dynamic-lr"), ({"dynamic_lr": (1e-3, 0.0)}, "--dynamic-lr"),
                                              ({"dynamic_lr": float("nan")}, "--dynamic-lr"), ({"dynamic_share": float("nan")}, "--dynamic-share"),
                                              ({"dynamic_share": 1.5}, "--dynamic-share"),
                                              ({"dynamic_lr": (1e-3, 2e-3), "dynamic_window": (16, 32, 64)}, "3 windows for 2 steps"),
                                              ({"dynamic_window": (16, 0)}, "--dynamic-window must be greater than 0")])
def test_bad_dynamic_settings_are_errors(options, message):
    with pytest.raises(CharRNNError, match=message):
        EvalConfig(**options)


def test_dynamic_evaluation_improves_on_a_repeated_passage():
    torch.manual_seed(0)
    model = CharRNN(tiny_config(hidden=32)).eval()
    passage = torch.randint(0, 29, (100,))
    ids = torch.cat([passage] * 8)
    static = losses_per_char(model, ids, config=EvalConfig(streams=1))
    dynamic = dynamic_losses_per_char(model, ids, config=EvalConfig(dynamic=True, dynamic_lr=0.01, dynamic_window=20))
    last = slice(700, None)  # the final repetition: the adapted model has seen this passage seven times
    assert dynamic[last].mean() < static[last].mean() - 0.3


def test_dynamic_decay_pulls_the_weights_back_to_the_trained_ones():
    torch.manual_seed(0)
    model = CharRNN(tiny_config(hidden=32)).eval()
    ids = torch.cat([torch.randint(0, 29, (100,))] * 4)
    frozen = dynamic_losses_per_char(model, ids, config=EvalConfig(dynamic=True, dynamic_lr=1e-30, dynamic_window=20))
    full_pull = dynamic_losses_per_char(model, ids, config=EvalConfig(dynamic=True, dynamic_lr=0.01, dynamic_window=20,
                                                                       dynamic_decay=1.0))
    free = dynamic_losses_per_char(model, ids, config=EvalConfig(dynamic=True, dynamic_lr=0.01, dynamic_window=20,
                                                                  dynamic_decay=0.0))
    assert torch.allclose(full_pull, frozen)  # pulled all the way back after every step: nothing is learned
    assert free[300:].mean() < frozen[300:].mean() - 0.3
    with pytest.raises(CharRNNError, match="--dynamic-decay"):
        EvalConfig(dynamic_decay=1.5)


def test_info_shows_a_trained_checkpoints_numbers(memorised_run, runner):
    state = checkpoint.load(memorised_run / "best.pt")
    human = runner.invoke(app, ["info", str(memorised_run)])
    assert human.exit_code == 0 and human.stderr == ""  # the report is the result: stdout
    assert f"{state['step']} steps" in human.stdout and "lstm 2 x 64" in human.stdout
    assert "no dropout or weight drop" in human.stdout  # and how it trained, as the plan and the options set it:
    assert "batch 8 x 32 characters, char-rnn's layout, lr 0.01 (cosine), weight decay 0.2" in human.stdout
    assert state["corpus"]["fingerprint"] in human.stdout  # whole: a pipe gets unwrapped lines
    machine = json.loads(runner.invoke(app, ["info", str(memorised_run), "--json"]).stdout)
    assert machine["steps"] == state["step"] and machine["vocab_size"] == 29
    assert machine["best_val_bits_per_char"] == pytest.approx(state["best_val_nats"] / math.log(2))
    assert len(machine["history"]["train"]) == state["step"]
    assert state["bf16"] is False  # the memorised run is pinned to fp32
    assert machine["arithmetic"] == "fp32" and "in fp32" in human.stdout


def test_bench_ensemble_scores_each_member_as_charrnn_eval_does_and_mixes_their_probabilities(tiny_corpus, tmp_path,
                                                                                                monkeypatch, capsys):
    # bench/ensemble.py measures what averaging several runs' predictions would gain (bench/QUALITY.md, session 49):
    # its members must score as `charrnn eval` scores them, and the mixture must be the mean of their probabilities
    spec = importlib.util.spec_from_file_location("ensemble", Path(__file__).parents[1] / "bench" / "ensemble.py")
    ensemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ensemble)
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])
    expected = [-math.log((math.exp(-1.0) + math.exp(-3.0)) / 2), -math.log((math.exp(-2.0) + math.exp(-0.5)) / 2)]
    assert ensemble.mixture_losses([a, b]).tolist() == pytest.approx(expected)
    assert ensemble.mixture_losses([a, a]).tolist() == pytest.approx(a.tolist())

    runs = [tmp_path / f"run{seed}" for seed in (0, 1)]
    for seed, run in enumerate(runs):
        charrnn.train(tiny_corpus, steps=6, seq_len=8, batch_size=2, hidden=16, threads=1, random_seed=seed, out=run)
    monkeypatch.setattr(sys, "argv", ["ensemble.py", str(tiny_corpus), *map(str, runs)])
    ensemble.main()
    report = json.loads(capsys.readouterr().out)
    alone = [charrnn.load(run, device="cpu").evaluate(tiny_corpus).bits_per_char for run in runs]
    assert report["members_bits_per_char"] == pytest.approx(alone, abs=1e-4)
    assert alone[0] != pytest.approx(alone[1], abs=1e-3)  # two different models, so the mixture is a real one
    models = [charrnn.load(run, device="cpu") for run in runs]
    ids = torch.tensor(models[0].vocab.encode(tiny_corpus.read_text()))
    mixed = ensemble.mixture_losses([losses_per_char(m.network, ids) for m in models])
    assert report["ensemble_bits_per_char"]["2"] == pytest.approx(float(mixed.mean()) / math.log(2), abs=1e-4)
