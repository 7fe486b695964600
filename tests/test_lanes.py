"""Members stepped side by side on CPU threads (charrnn.lanes) compute exactly what members stepped in turn do."""

from dataclasses import replace

import pytest
import torch

from charrnn import evaluate
from charrnn.config import EvalConfig
from charrnn.lanes import Lanes, lane_count, step_in_turn
from charrnn.model import build
from charrnn.training import run

from .conftest import tiny_config, tiny_job


def stepped_in_turn(model, x, y, state):
    model.seed_members()
    return step_in_turn(model, model, x, y, state, bf16=False, grad_clip=0.05)


def stepped_in_lanes(model, x, y, state, lanes):
    model.seed_members()
    return lanes.step(model, x, y, state, bf16=False, grad_clip=0.05)


@pytest.mark.parametrize("variational", [False, True])
def test_members_in_lanes_compute_what_members_in_turn_do_bit_for_bit(variational):
    """Dropout everywhere it can be, and a clip small enough to bite: every draw and every gradient must match."""
    config = tiny_config(members=5, weight_drop=0.3, dropout=0.2, embedding_dropout=0.1, variational=variational)
    torch.manual_seed(0)
    in_turn = build(config).train()
    in_lanes = build(config).train()
    in_lanes.load_state_dict(in_turn.state_dict())
    x, y = torch.randint(0, 29, (2, 3, 12))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # each lane's thread count: the same products, the same rounding
        state_a = state_b = None
        with Lanes(3, threads=3) as lanes:
            for _ in range(3):  # state carried from step to step, dropout drawn afresh each step
                torch.manual_seed(1)
                loss_a, state_a = stepped_in_turn(in_turn, x, y, state_a and [tuple(t.detach() for t in s) for s in state_a])
                torch.manual_seed(1)
                loss_b, state_b = stepped_in_lanes(in_lanes, x, y, state_b and [tuple(t.detach() for t in s) for s in state_b], lanes)
                assert torch.equal(loss_a, loss_b)
                assert all(torch.equal(a, b) for sa, sb in zip(state_a, state_b) for a, b in zip(sa, sb))
                for (name, a), b in zip(in_turn.named_parameters(), in_lanes.parameters()):
                    assert torch.equal(a.grad, b.grad), name
    finally:
        torch.set_num_threads(threads)
    # the members drew masks of their own: with dropout on, two members of equal weights still differ
    twins = build(replace(config, members=2)).train()
    twins.members[1].load_state_dict(twins.members[0].state_dict())
    twins.seed_members()
    logits, _ = twins(x, per_member=True)
    assert not torch.equal(logits[0], logits[1])


def test_a_lanes_error_reaches_the_caller():
    model = build(tiny_config(members=2)).train()
    with Lanes(2, threads=2) as lanes, pytest.raises(IndexError):
        lanes.step(model, torch.full((2, 5), 40), torch.zeros(2, 5, dtype=torch.long), None, bf16=False, grad_clip=1.0)


def test_lanes_are_one_per_cpu_thread_for_an_ensemble_and_none_elsewhere():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert lane_count(cpu, members=16, threads=2, distributed=False) == 2
    assert lane_count(cpu, members=3, threads=8, distributed=False) == 3
    assert lane_count(cpu, members=1, threads=2, distributed=False) == 1
    assert lane_count(cpu, members=16, threads=1, distributed=False) == 1
    assert lane_count(cuda, members=16, threads=2, distributed=False) == 1  # a GPU queues members' kernels anyway
    assert lane_count(cpu, members=16, threads=2, distributed=True) == 1  # DDP's hooks: one backward a step


def test_an_ensembles_run_is_the_same_at_one_thread_and_on_two_lanes(tiny_corpus, tmp_path):
    """--threads changes how fast an ensemble trains, not what it learns: the same weights bit for bit."""
    job = tiny_job(tiny_corpus, tmp_path / "one", steps=12)
    job = replace(job, model=replace(job.model, members=3, weight_drop=0.2, dropout=0.1))
    logs = {}
    for threads in (1, 2):
        lines = []
        run(replace(job, out=tmp_path / str(threads), threads=threads), log=lines.append)
        logs[threads] = lines[0]
    assert "members stepped 2 at a time" in logs[2] and "members stepped" not in logs[1]
    one, two = (torch.load(tmp_path / str(t) / "latest.pt", weights_only=True) for t in (1, 2))
    assert all(torch.equal(t, two["model"][name]) for name, t in one["model"].items())
    assert one["history"]["train"] == two["history"]["train"]


@pytest.mark.parametrize("members", [2, 3])
def test_dynamic_evaluation_of_an_ensemble_scores_the_same_side_by_side_as_in_turn(members, monkeypatch):
    """Each adapting network (one per member and step) on a lane of its own computes what it does in turn, bit for bit:
    the lanes change how fast `charrnn eval --dynamic` runs, never its score."""
    torch.manual_seed(0)
    model = build(tiny_config(members=members)).eval()
    ids = torch.randint(0, 29, (150,))
    config = EvalConfig(dynamic=True, dynamic_lr=(0.01, 0.05), dynamic_window=(16, 7))
    threads = torch.get_num_threads()
    chosen = []
    real_rule = evaluate.dynamic_lanes
    monkeypatch.setattr(evaluate, "dynamic_lanes", lambda *args: chosen.append(real_rule(*args)) or chosen[-1])
    try:
        torch.set_num_threads(1)  # in turn, at the thread count each lane gets below
        in_turn = evaluate.dynamic_step_losses(model, ids, config=config)
        torch.set_num_threads(4)  # one lane per adapting network, one thread each
        side_by_side = evaluate.dynamic_step_losses(model, ids, config=config)
    finally:
        torch.set_num_threads(threads)
    assert chosen == [1, 4]
    assert torch.equal(in_turn, side_by_side)
    assert not torch.equal(in_turn[0], in_turn[1])  # two steps, each its own copy


def test_lanes_map_returns_results_in_order_and_reraises_an_items_error():
    with Lanes(2, threads=2) as lanes:
        assert lanes.map(lambda k: k * k, range(7)) == [0, 1, 4, 9, 16, 25, 36]
        with pytest.raises(ZeroDivisionError):
            lanes.map(lambda k: 1 / (k - 3), range(7))
    with Lanes(1, threads=2) as lanes:  # one lane: the caller's own thread, no pool
        assert lanes.map(lambda k: k + 1, [1, 2]) == [2, 3]


def test_one_networks_dynamic_evaluation_runs_its_copies_in_turn():
    torch.manual_seed(0)
    assert evaluate.dynamic_lanes(build(tiny_config()), networks=2, threads=2) == 1
    assert evaluate.dynamic_lanes(build(tiny_config(members=2)), networks=4, threads=2) == 2
    assert evaluate.dynamic_lanes(build(tiny_config(members=2)), networks=4, threads=1) == 1
