"""Ensembles (--members K): K networks trained side by side, each as it would be alone, predicting the mean of their
probabilities everywhere a model predicts: validation, eval (static and dynamic), sampling, `charrnn show`."""

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import charrnn
from charrnn import checkpoint, plan
from charrnn.cli import app
from charrnn.config import EvalConfig, bits
from charrnn.evaluate import dynamic_step_losses, losses_per_char
from charrnn.model import CharRNN, Ensemble, build, members, mixture_log_probs, with_even_embedding
from charrnn.sampling import EnsembleStepper, stepper
from charrnn.training import ModelOptions, run

from .conftest import TINY_TEXT, tiny_config, tiny_job


def mixed(member_losses: torch.Tensor) -> torch.Tensor:
    """Per-character loss (nats) of the mean of K predictors' probabilities, from their own losses (K, N)."""
    return -(torch.logsumexp(-member_losses.double(), 0) - torch.log(torch.tensor(float(len(member_losses)))))


def ensemble(k: int = 3, **overrides) -> Ensemble:
    torch.manual_seed(0)
    return build(tiny_config(members=k, **overrides)).eval()


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities():
    model = ensemble()
    assert isinstance(model, Ensemble) and isinstance(build(tiny_config()), CharRNN)
    ids = torch.randint(0, 29, (2, 11))
    log_probs, state = model(ids)
    alone = torch.stack([member(ids)[0].softmax(-1) for member in members(model)])  # (K, B, T, V)
    assert torch.allclose(log_probs.exp(), alone.mean(0), atol=1e-6)
    assert not torch.allclose(alone[0], alone[1])  # the members differ, so the mean is not any one of them
    per_member, _ = model(ids, per_member=True)
    assert per_member.shape == (3, 2, 11, 29)
    assert len(state) == 3 * model.config.layers
    assert model.parameter_count() == 3 * members(model)[0].parameter_count()


def test_evaluation_scores_the_mixture_of_the_members_as_bench_ensemble_mixes_separate_runs():
    model = ensemble()
    ids = torch.randint(0, 29, (300,))
    config = EvalConfig(streams=3, burn_in=8, window=32)
    each = torch.stack([losses_per_char(member, ids, config=config) for member in members(model)])
    assert torch.allclose(losses_per_char(model, ids, config=config).double(), mixed(each), atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("skip", [True, False])
def test_the_sampler_steps_the_mixture_the_fused_forward_computes(cell, skip):
    model = ensemble(cell=cell, skip=skip)
    ids = torch.randint(0, 29, (2, 20))  # two samples at once, as --num-samples 2
    fused, _ = model(ids)
    steps = stepper(model)
    assert isinstance(steps, EnsembleStepper)
    state = steps.initial_state(model.initial_state(2))
    for t in range(ids.shape[1]):
        log_probs, state = steps.step(ids[:, t], state)
        assert torch.allclose(log_probs, fused[:, t], atol=1e-5)


def test_dynamic_evaluation_adapts_each_member_on_its_own_loss():
    model = ensemble(2)
    ids = torch.randint(0, 29, (200,))
    config = EvalConfig(dynamic=True, dynamic_lr=(1e-3, 3e-3), dynamic_window=(20, 50))
    each = torch.stack([dynamic_step_losses(member, ids, config=config) for member in members(model)])  # (K, steps, N)
    together = dynamic_step_losses(model, ids, config=config)
    for step in range(2):
        assert torch.allclose(together[step].double(), mixed(each[:, step]), atol=1e-5)
    assert torch.equal(model(ids[None, :5])[0], ensemble(2)(ids[None, :5])[0])  # the caller's model is unchanged


def test_each_member_of_a_joint_run_trains_as_it_would_alone(tiny_corpus, tmp_path):
    job = tiny_job(tiny_corpus, tmp_path / "alone", steps=20)
    run(job)
    run(replace(job, out=tmp_path / "joint", model=replace(job.model, members=2)))
    alone = torch.load(tmp_path / "alone" / "latest.pt", weights_only=True)
    joint = torch.load(tmp_path / "joint" / "latest.pt", weights_only=True)
    assert all(torch.equal(joint["model"][f"members.0.{name}"], t) for name, t in alone["model"].items())
    assert not torch.equal(joint["model"]["members.1.head.weight"], alone["model"]["head.weight"])
    assert joint["model_config"]["members"] == 2
    # its training loss is a member's mean, comparable with one network's
    first = alone["history"]["train"][0][1]
    assert joint["history"]["train"][0][1] == pytest.approx(first, rel=0.05)


def test_an_ensemble_resumes_exactly_and_keeps_its_members(tiny_corpus, tmp_path, runner):
    job = tiny_job(tiny_corpus, tmp_path / "straight", steps=20)
    job = replace(job, model=replace(job.model, members=2, weight_drop=0.2))
    run(job)

    def interrupt_at_step_7(progress):
        if progress.step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; the loop saves and stops at the step boundary

    assert run(replace(job, out=tmp_path / "halves"), on_progress=interrupt_at_step_7).interrupted
    run(replace(job, out=tmp_path / "halves", resume=True))
    straight = torch.load(tmp_path / "straight" / "latest.pt", weights_only=True)["model"]
    halves = torch.load(tmp_path / "halves" / "latest.pt", weights_only=True)["model"]
    assert all(torch.equal(t, halves[name]) for name, t in straight.items())
    refused = runner.invoke(app, ["train", str(tiny_corpus), "--out", str(tmp_path / "halves"), "--resume",
                                  "--members", "3"])
    assert refused.exit_code == 1 and "--members 3 differs from the checkpoint's 2" in refused.stderr


def test_an_ensemble_with_an_odd_embedding_loads_padded_and_computes_the_same():
    model = ensemble(2, embedding=7)
    config, weights = with_even_embedding(model.config, model.state_dict())
    padded = build(config)
    padded.load_state_dict(weights)
    ids = torch.randint(0, 29, (2, 9))
    assert config.embedding == 8 and torch.allclose(model(ids)[0], padded.eval()(ids)[0], atol=1e-6)


def test_a_checkpoint_from_before_ensembles_is_one_network(tmp_path):
    model = build(tiny_config())
    saved = tmp_path / "old.pt"
    config = model.config.to_dict()
    del config["members"]  # as every checkpoint before session 50 wrote it
    checkpoint.save(saved, {"model_config": config, "model": model.state_dict(), "vocab": sorted(set(TINY_TEXT))})
    loaded, _ = checkpoint.restore_model(checkpoint.load(saved))
    assert isinstance(loaded, CharRNN) and loaded.config.members == 1


def test_a_clock_budget_trains_members_in_the_time_a_small_texts_passes_leave():
    shape = {"vocab_size": 65, "layers": 2, "embedding": 66, "skip": True, "cell": "lstm", "batch_chars": 2048,
             "seq_len": 64}
    amx = plan.nominal_flops("cpu-amx")

    def planned(chars, **budget):
        return plan.plan(corpus_chars=chars, budget=plan.Budget(**budget), flops=amx, **shape)

    small = planned(20_000, minutes=5)
    assert small.members == plan.MAX_MEMBERS and f"--members {plan.MAX_MEMBERS}" in small.describe(plan.PLANNED)
    # a member's step costs more than its arithmetic (session 51: 9.5 ms at one thread), so a text of 190,000
    # characters fits 6 of the 16 its arithmetic alone would count in 5 minutes at half speed
    assert planned(190_000, minutes=5).members == 6
    # stepped two or four at a time (charrnn.lanes), members spend that cost on as many threads at once: more fit
    assert [plan.plan(corpus_chars=190_000, budget=plan.Budget(minutes=5), flops=amx, lanes=lanes, **shape).members
            for lanes in (2, 4)] == [7, 8]
    # tinyshakespeare: its passes fill the 5 and 15 minutes at half speed; an hour trains five networks. Where members
    # step side by side (two threads), the one 2x384 of 5 and 15 minutes, which would learn the text by heart, is two of
    # 2x256 instead (plan.SPLIT_MEMBERS)
    assert [planned(953_000, minutes=m).members for m in (5, 15, 60)] == [1, 1, 5]
    side_by_side = [plan.plan(corpus_chars=953_000, budget=plan.Budget(minutes=m), flops=amx, lanes=2, **shape)
                    for m in (5, 15, 60)]
    assert [(p.members, p.hidden) for p in side_by_side] == [(2, 256), (2, 256), (5, 384)]
    assert planned(14_000_000, minutes=60).members == 1  # the clock ends a large text's passes: one network
    for budget in ({"steps": 100}, {"epochs": 3.0}, {"minutes": 60, "steps": 100}):  # the user said how much to read
        assert planned(85_000, **budget).members == 1
    assert plan.plan(corpus_chars=85_000, budget=plan.Budget(minutes=5), flops=amx, members=2, **shape).members == 2
    # members regularise less than one network (bench/QUALITY.md, sessions 51 and 54); an explicit value wins
    assert planned(30_000, minutes=5).members >= plan.MANY_MEMBERS_FROM
    assert planned(30_000, minutes=5).weight_drop == plan.MANY_MEMBERS_WEIGHT_DROP < plan.MEMBERS_WEIGHT_DROP < plan.WEIGHT_DROP
    # and a text read for the fewest steps a clock budget gives (under 20,480 characters here) none (session 53)
    assert small.weight_drop == plan.FLOOR_MEMBERS_WEIGHT_DROP == 0 and "(200 steps" in small.describe(plan.PLANNED)
    assert planned(20_000, minutes=5, steps=500).weight_drop == plan.WEIGHT_DROP  # not planned by the clock
    for count, weight_drop in ((1, plan.WEIGHT_DROP), (4, plan.MEMBERS_WEIGHT_DROP), (7, plan.MEMBERS_WEIGHT_DROP),
                               (8, 0), (16, 0)):  # at the floor, from 8 members
        told = plan.plan(corpus_chars=10_000, budget=plan.Budget(minutes=5), flops=amx, members=count, **shape)
        assert told.weight_drop == weight_drop, count
    assert planned(400_000, minutes=5).members == 2 and planned(400_000, minutes=5).weight_drop == plan.MEMBERS_WEIGHT_DROP
    for count, weight_drop in ((1, plan.WEIGHT_DROP), (2, plan.MEMBERS_WEIGHT_DROP), (3, plan.MEMBERS_WEIGHT_DROP),
                               (15, plan.MEMBERS_WEIGHT_DROP), (16, plan.MANY_MEMBERS_WEIGHT_DROP)):
        told = plan.plan(corpus_chars=30_000, budget=plan.Budget(minutes=5), flops=amx, members=count, **shape)
        assert (told.members, told.weight_drop) == (count, weight_drop)
    for chars in (20_000, 85_000, 190_000, 400_000, 953_000, 3_000_000):  # a longer budget never trains fewer
        for lanes in (1, 2):
            counts = [plan.plan(corpus_chars=chars, budget=plan.Budget(minutes=m), flops=amx, lanes=lanes, **shape).members
                      for m in (1, 2, 5, 10, 15, 30, 60, 120)]
            assert counts == sorted(counts), (chars, lanes, counts)


def test_the_command_line_trains_samples_scores_and_shows_an_ensemble(tiny_corpus, tmp_path, runner):
    out = tmp_path / "run"
    trained = runner.invoke(app, ["train", str(tiny_corpus), "--steps", "30", "--hidden", "16", "--seq-len", "16",
                                  "--batch-size", "4", "--members", "2", "--out", str(out), "--quiet"])
    assert trained.exit_code == 0, trained.stderr
    model = charrnn.load(out, device="cpu")
    assert model.config.members == 2 and "2 members" in repr(model)
    sampled = runner.invoke(app, ["sample", "-c", str(out), "--seed", "the ", "--length", "50", "--temperature", "0"])
    assert sampled.exit_code == 0 and sampled.stdout.removesuffix("\n") == model.generate("the ", length=50, temperature=0)
    scored = model.evaluate(tiny_corpus)
    network = model.network
    ids = torch.tensor(model.vocab.encode(TINY_TEXT))
    each = torch.stack([losses_per_char(member, ids) for member in members(network)])
    assert scored.nats_per_char == pytest.approx(float(mixed(each).mean()), rel=1e-5)
    traced = model.trace("the quick brown fox")
    assert traced.activations.shape == (19, network.config.layers, 16)  # the first member's cells
    with torch.no_grad():
        log_probs, _ = network(torch.tensor([model.vocab.encode("the quick brown fox")]))
    assert traced.bits[1] == pytest.approx(bits(-float(log_probs[0, 0, model.vocab.encode("h")[0]])), rel=1e-4)
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "2 networks averaged (--members 2)" in info.stdout
    bad = runner.invoke(app, ["train", str(tiny_corpus), "--members", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and bad.stderr.strip().endswith("--members must be greater than 0, got 0")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_clock_budget_on_a_tiny_text_trains_planned_members_through_training(tiny_corpus, tmp_path):
    lines = []
    small = {"minutes": 2, "seq_len": 32, "batch_size": 8, "hidden": 8}

    def stop_at_once(progress):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the run saves after its first step

    charrnn.train(tiny_corpus, out=tmp_path / "run", log=lines.append, on_progress=stop_at_once, **small)
    assert f"{plan.MAX_MEMBERS} members" in lines[0] and f"--members {plan.MAX_MEMBERS}" in lines[0]
    loaded = charrnn.load(tmp_path / "run", device="cpu")
    assert loaded.config.members == plan.MAX_MEMBERS

    charrnn.train(tiny_corpus, members=1, out=tmp_path / "one", on_progress=stop_at_once, **small)
    assert charrnn.load(tmp_path / "one", device="cpu").config.members == 1  # the user's --members wins
    assert ModelOptions().members == 1


@pytest.fixture
def three_members(tiny_corpus, tmp_path) -> Path:
    run(replace(tiny_job(tiny_corpus, tmp_path / "run", steps=6), model=ModelOptions(hidden=16, embedding=8, members=3)))
    return tmp_path / "run"


def test_the_first_k_members_predict_as_those_members_mixed(three_members, tmp_path):
    whole, two, one = (charrnn.load(three_members, members=k) for k in (None, 2, 1))
    ids = torch.tensor([whole.vocab.encode(TINY_TEXT[:40])])
    each = whole.network(ids, per_member=True)[0]  # (3, 1, T, V)
    assert two.config.members == 2 and torch.allclose(two.network(ids)[0], mixture_log_probs(each[:2]), atol=1e-6)
    assert isinstance(one.network, CharRNN) and torch.equal(one.network(ids)[0], each[0])
    assert not torch.allclose(two.network(ids)[0], whole.network(ids)[0], atol=1e-4)  # a different model, not the whole
    assert torch.equal(charrnn.load(three_members, members=3).network(ids)[0], whole.network(ids)[0])
    assert 3 * two.summary()["parameters"] == 2 * whole.summary()["parameters"]
    assert two.summary()["best_val_bits_per_char"] is None  # the run's validation scored all three
    pages = [len(m.export_html()) for m in (one, two, whole)]  # the page holds only the members kept: each adds
    assert pages[0] < pages[1] < pages[2] and abs((pages[2] - pages[1]) - (pages[1] - pages[0])) < 0.05 * pages[0]  # alike
    text = tmp_path / "held_out.txt"
    text.write_text(TINY_TEXT[:300], encoding="utf-8")
    assert two.rounded("fp32").evaluate(text).bits_per_char == two.evaluate(text).bits_per_char


@pytest.mark.parametrize("k, message", [(4, "--members 4: this model has 3 members; give 1 to 3"),
                                        (0, "--members 0: this model has 3 members; give 1 to 3")])
def test_more_members_than_the_model_has_is_a_clear_error(three_members, runner, k, message):
    with pytest.raises(charrnn.CharRNNError, match=message):
        charrnn.load(three_members, members=k)
    result = runner.invoke(app, ["eval", "-c", str(three_members), "--members", str(k)])
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {message}"


def test_one_network_takes_members_1_only(memorised_run):
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(charrnn.load(memorised_run, members=1).network(ids)[0], charrnn.load(memorised_run).network(ids)[0])
    with pytest.raises(charrnn.CharRNNError, match="--members 2: this model is one network, not an ensemble; give 1"):
        charrnn.load(memorised_run, members=2)
    with pytest.raises(TypeError, match="members must be a whole number or None, got 1.5"):
        charrnn.load(memorised_run, members=1.5)


def test_sample_and_export_with_fewer_members_use_that_model(three_members, runner, tmp_path):
    args = ["--seed", "the", "-n", "60", "--temperature", "0", "--no-echo"]
    printed = runner.invoke(app, ["sample", "-c", str(three_members), "--members", "1", *args])
    assert printed.exit_code == 0
    one = charrnn.load(three_members, members=1)
    assert printed.stdout.strip("\n") == one.generate("the", length=60, temperature=0, echo=False)
    assert runner.invoke(app, ["export", str(three_members), "--members", "2", "-o", str(tmp_path / "two.html")]).exit_code == 0
    assert '"members": 2' in (tmp_path / "two.html").read_text(encoding="utf-8")
