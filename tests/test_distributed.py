"""Data-parallel training under torchrun (gloo on CPU) matches one process with the same global batch."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from charrnn import checkpoint

ARGS = ["--hidden", "16", "--embedding", "8", "--batch-size", "8", "--seq-len", "16", "--steps", "6", "--eval-every", "3",
        "--val-fraction", "0.1", "--dropout", "0", "--device", "cpu", "--threads", "1", "--quiet",
        "--precision", "fp32"]  # exact equality needs fp32: bf16 rounds a half batch differently


def run(command, **kwargs):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, **kwargs)


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun is not installed")
def test_two_processes_with_half_the_batch_match_one_process(tiny_corpus, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    one = run([sys.executable, "-m", "charrnn", "train", str(tiny_corpus), *ARGS, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "charrnn", "train", str(tiny_corpus), *ARGS,
               "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    a = checkpoint.load(tmp_path / "one" / "latest.pt")
    b = checkpoint.load(tmp_path / "two" / "latest.pt")
    assert a["step"] == b["step"] == 6 and b["world_size"] == 2
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], atol=1e-5), key
    for layer_a, layer_b in zip(a["hidden"], b["hidden"]):  # all 8 streams' states, gathered from both ranks
        for ta, tb in zip(layer_a, layer_b):
            assert ta.shape == tb.shape == (1, 8, 16) and torch.allclose(ta, tb, atol=1e-5)
    # A checkpoint written by two processes resumes in one.
    resumed = run([sys.executable, "-m", "charrnn", "train", str(tiny_corpus), "--out", str(tmp_path / "two"), "--resume",
                   "--steps", "8", "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(tmp_path / "two" / "latest.pt")["step"] == 8


def test_every_collective_the_training_loop_issues_gets_tensors_on_the_models_device(tiny_corpus, tmp_path,
                                                                                     monkeypatch):
    """NCCL takes no CPU tensors: the loop's collectives (stop flag, divergence flag, validation sums, hidden-state
    gathers) must hand over tensors on the training device. Rank 0 of a pretend 2-process run, with the collectives
    recorded (each rank's values taken as equal)."""
    import torch.distributed as dist

    from charrnn import distributed
    from charrnn.training import run

    from .conftest import tiny_job

    seen = []

    def all_reduce(tensor, op=None):
        seen.append(("all_reduce", tensor.device))
        if op == dist.ReduceOp.SUM:
            tensor.mul_(2)

    def all_gather(parts, tensor):
        seen.append(("all_gather", tensor.device))
        for part in parts:
            part.copy_(tensor)

    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(dist, "barrier", lambda: None)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **kwargs: model)
    assert distributed.launched_by_torchrun()
    run(tiny_job(tiny_corpus, tmp_path / "r", steps=4, eval_every=2))
    model_device = torch.device("cpu")
    assert {kind for kind, _ in seen} == {"all_reduce", "all_gather"}
    assert all(device == model_device for _, device in seen), seen
    state = checkpoint.load(tmp_path / "r" / "latest.pt")
    assert state["world_size"] == 2 and state["hidden"][0][0].shape[1] == 4  # both ranks' rows, gathered


def test_the_process_group_serves_cuda_and_cpu_tensors_on_gpus(monkeypatch):
    """On GPUs the group is NCCL for CUDA tensors and gloo for CPU ones, so a CPU tensor cannot break a run."""
    import torch.distributed as dist

    from charrnn import distributed

    backends = []
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: backends.append(backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    ctx = distributed.init(torch.device("cuda"))
    assert backends == ["cpu:gloo,cuda:nccl"] and ctx.device == torch.device("cuda", 1) and ctx.rank == 1
    distributed.init(torch.device("cpu"))
    assert backends[-1] == "gloo"
