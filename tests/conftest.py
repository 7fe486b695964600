"""Shared fixtures: tiny corpora and models, an isolated working directory and cache, a CLI runner."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.training import ModelOptions, TrainJob, run  # noqa: E402

TINY_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40  # 1,800 chars, 29 distinct


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own directory (runs/ lands there) with its own corpus cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def tiny_config(vocab_size: int = 29, **overrides) -> ModelConfig:
    return ModelConfig(**{"vocab_size": vocab_size, "hidden": 16, "embedding": 8, "layers": 2, "dropout": 0.0, **overrides})


def tiny_job(corpus: Path, out: Path, *, steps: int = 20, **train_overrides) -> TrainJob:
    # fp32 unless a test asks: on a CPU with native bf16, auto picks bf16, and tests compare runs bit for bit
    train = {"seq_len": 16, "batch_size": 4, "steps": steps, "eval_every": 10, "warmup_steps": 5, "val_fraction": 0.1,
             "precision": "fp32", **train_overrides}
    return TrainJob(corpus_path=corpus, corpus_name=corpus.stem, out=out, device="cpu",
                    model=ModelOptions(hidden=16, embedding=8, dropout=0.0), train=TrainConfig(**train))


@pytest.fixture(scope="session")
def memorised_run(tmp_path_factory) -> Path:
    """A tiny model trained until it has memorised TINY_TEXT (near-zero loss); shared by many tests."""
    root = tmp_path_factory.mktemp("memorised")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    torch.set_num_threads(1)
    job = TrainJob(corpus_path=corpus, corpus_name="tiny", out=root / "run", device="cpu",
                   model=ModelOptions(hidden=64, embedding=16, dropout=0.0),
                   train=TrainConfig(seq_len=32, batch_size=8, lr=1e-2, steps=300, eval_every=100, warmup_steps=10,
                                     val_fraction=0.1, precision="fp32"))  # tests compare it with fp32 arithmetic
    run(job)
    return root / "run"
