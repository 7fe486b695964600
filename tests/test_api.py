"""The public Python API: what a command does, a Python user does with one call, with the same result."""

import dataclasses
import inspect
import json
import pydoc
import re

import pytest
import torch

import charrnn
from charrnn import api
from charrnn.cli import app
from charrnn.config import TrainConfig
from charrnn.plan import FITTED, PLANNED
from charrnn.training import ModelOptions

from .conftest import TINY_TEXT

TINY = {"hidden": 16, "embedding": 8, "seq_len": 16, "batch_size": 4, "steps": 12, "eval_every": 6,
        "val_fraction": 0.1, "device": "cpu", "precision": "fp32"}


def test_generate_is_what_sample_prints(runner, memorised_run):
    model = charrnn.load(memorised_run, device="cpu")
    printed = runner.invoke(app, ["sample", "-c", str(memorised_run), "--seed", "the", "-n", "40", "--random-seed", "3"])
    assert printed.exit_code == 0
    assert model.generate("the", length=40, random_seed=3) + "\n" == printed.stdout
    assert model.generate("the", length=40, random_seed=3, echo=False) == printed.stdout[3:-1]


def test_stream_yields_the_continuation_as_it_is_made(memorised_run):
    model = charrnn.load(memorised_run, device="cpu")
    pieces = list(model.stream("the quick", length=30, temperature=0))
    assert len(pieces) == 30 and "".join(pieces) == TINY_TEXT[9:39]  # the memorised text, greedily


def test_evaluate_gives_eval_jsons_numbers(runner, memorised_run):
    report = charrnn.load(memorised_run, device="cpu").evaluate()
    printed = json.loads(runner.invoke(app, ["eval", "-c", str(memorised_run), "--json"]).stdout)
    ours = report.to_dict()
    assert set(ours) == set(printed)
    for key in ("nats_per_char", "bits_per_char", "perplexity", "chars", "unknown_chars", "file"):
        assert ours[key] == printed[key], key


def test_train_from_python_matches_the_command_line(runner, tiny_corpus, tmp_path):
    seen = []
    result = charrnn.train(tiny_corpus, out=tmp_path / "py", on_progress=seen.append, **TINY)
    assert result.steps == 12 and [p.step for p in seen] == list(range(1, 13))
    cli_args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert runner.invoke(app, ["train", str(tiny_corpus), *cli_args, "--out", str(tmp_path / "cli"), "-q"]).exit_code == 0
    a, b = (torch.load(tmp_path / name / "latest.pt", weights_only=True) for name in ("py", "cli"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_none_for_a_planned_option_plans_it_as_the_command_line_does(tiny_corpus, tmp_path):
    # the command line's default for a planned option is None, so a Python caller may pass it through
    given = {k: v for k, v in TINY.items() if k not in ("hidden", "eval_every", "batch_size", "seq_len")}
    planned = charrnn.train(tiny_corpus, out=tmp_path / "left_out", **given)
    as_none = charrnn.train(tiny_corpus, out=tmp_path / "none", hidden=None, lr=None, weight_drop=None, members=None,
                            eval_every=None, segment_len=None, batch_size=None, seq_len=None, **given)
    assert planned.steps == as_none.steps == TINY["steps"]
    a, b = (torch.load(tmp_path / name / "latest.pt", weights_only=True) for name in ("left_out", "none"))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def test_a_python_training_run_s_threads_end_with_the_run(tiny_corpus, tmp_path):
    before = torch.get_num_threads()  # 1 in the suite (conftest)
    seen = []
    charrnn.train(tiny_corpus, out=tmp_path / "run", threads=before + 1, on_progress=lambda p: seen.append(torch.get_num_threads()),
                  **TINY)
    assert set(seen) == {before + 1}  # the run itself used the count asked for
    assert torch.get_num_threads() == before  # and the caller's later work runs at its own again


def test_an_unknown_training_option_or_choice_is_a_clear_error(tiny_corpus):
    with pytest.raises(charrnn.CharRNNError, match="unknown training option.*hiden.*hidden"):
        charrnn.train(tiny_corpus, hiden=32)
    with pytest.raises(charrnn.CharRNNError, match="--cell must be one of lstm, gru, rnn, got 'lstn'"):
        charrnn.train(tiny_corpus, cell="lstn")
    with pytest.raises(charrnn.CharRNNError, match="--precision must be one of auto, fp32, bf16, got 'bf15'"):
        charrnn.train(tiny_corpus, precision="bf15")


@pytest.mark.parametrize("call, message", [
    (lambda m, corpus: m.generate(123), "seed must be a string, got 123"),
    (lambda m, corpus: m.generate("the", length="10"), "length must be a whole number, got '10'"),
    (lambda m, corpus: m.generate("the", temperature="0.5"), "temperature must be a number, got '0.5'"),
    (lambda m, corpus: m.generate("the", top_k=2.5), "top_k must be a whole number or None, got 2.5"),
    (lambda m, corpus: m.generate("the", stop=[1]), "stop must be a string or a list of strings"),
    (lambda m, corpus: m.generate("the", stop=None), "stop must be a string or a list of strings"),
    (lambda m, corpus: m.generate("the", drop_unknown=1), "drop_unknown must be True or False, got 1"),
    (lambda m, corpus: m.generate("the", echo="no"), "echo must be True or False, got 'no'"),
    (lambda m, corpus: m.evaluate(corpus, dynamic=True, dynamic_lr="1e-3"), "dynamic_lr must be a number or a list of them"),
    (lambda m, corpus: m.evaluate(corpus, dynamic=True, dynamic_window=[16.5]), "dynamic_window must be a whole number or a list"),
    (lambda m, corpus: m.trace(2.5), "text must be a string, got 2.5"),
    (lambda m, corpus: m.trace("the cat", drop_unknown="yes"), "drop_unknown must be True or False, got 'yes'"),
    (lambda m, corpus: m.prepare_seed("the", drop_unknown=0), "drop_unknown must be True or False, got 0"),
    (lambda m, corpus: m.export_html(seed=2.5), "seed must be a string or None, got 2.5"),
    (lambda m, corpus: charrnn.load(corpus, threads=2.5), "threads must be a whole number or None, got 2.5"),
    (lambda m, corpus: charrnn.train(corpus, steps="5"), "steps must be a whole number or None, got '5'"),
    (lambda m, corpus: charrnn.train(corpus, hidden=1.5), "hidden must be a whole number, got 1.5"),
    (lambda m, corpus: charrnn.train(corpus, steps=True), "steps must be a whole number or None, got True"),
    (lambda m, corpus: charrnn.train(corpus, skip="no"), "skip must be True or False, got 'no'"),
])
def test_a_wrong_type_from_python_names_the_option_and_what_it_wants(memorised_run, tiny_corpus, call, message):
    # not "'<' not supported between 'str' and 'int'" from deep inside, nor True read as one step
    with pytest.raises(TypeError, match=re.escape(message)):
        call(charrnn.load(memorised_run), tiny_corpus)
    assert not (tiny_corpus.parent / "runs").exists()


def test_a_stop_string_is_one_string_not_a_stop_at_each_of_its_characters(memorised_run):
    model = charrnn.load(memorised_run)
    whole = model.generate("the", length=100, temperature=0)
    assert "\n" in whole[:90] and "\n\n" not in whole  # TINY_TEXT has single newlines only
    assert model.generate("the", length=100, temperature=0, stop="\n\n") == whole
    assert model.generate("the", length=100, temperature=0, stop="\n") == whole[:whole.index("\n") + 1]


def test_the_command_lines_defaults_are_the_apis():
    """`charrnn train`'s options are charrnn.train's keywords with the same defaults: one source of truth."""
    from charrnn.cli.app import train as train_command

    defaults = {**{f.name: f.default for f in dataclasses.fields(ModelOptions)},
                **{f.name: f.default for f in dataclasses.fields(TrainConfig)}}
    for name, parameter in inspect.signature(train_command).parameters.items():
        if name in PLANNED and name not in FITTED:  # not given on the command line: planned by the same rule as for
            assert parameter.default is None, name  # a Python caller
        elif name in defaults:
            assert parameter.default == defaults[name], name
    assert {n for n in inspect.signature(train_command).parameters if n in api.TRAIN_OPTIONS} == (
        set(api.TRAIN_OPTIONS) - {"final_lr_fraction", "val_max_chars"})  # two knobs the CLI does not expose


def test_help_charrnn_lists_the_public_api():
    text = pydoc.render_doc(charrnn, renderer=pydoc.plaintext)
    for name in ("train(", "load(", "Model.generate", "Model.stream", "Model.evaluate", "CharRNNError"):
        assert name in text, name


def test_import_charrnn_does_not_import_torch():
    import subprocess
    import sys

    probe = "import sys, charrnn; assert 'torch' not in sys.modules; charrnn.load; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
def test_the_readmes_python_example_runs_as_written(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("## Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "mine" / "best.pt").is_file()
