"""charrnn benchmark: the machine's limits, then each model's training, eval and sampling speed against them.

    python bench/run.py            # full (about 10 minutes on a 2-core CPU)
    python bench/run.py --quick    # about 2 minutes
    python bench/run.py --models default,2x1024 --json out.json

Every model runs in its own subprocess so that its peak resident memory is its own. Training is measured
through charrnn's own training loop (forward, backward, clipping, Adam step), on a synthetic corpus with a
103-character vocabulary, after warm-up steps. "plain" is the straightforward PyTorch model (embedding →
one multi-layer nn.LSTM → linear, no skips) measured the same way, so ours/plain is a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from machine import cpu_name  # noqa: E402  (bench/machine.py)
from torch import nn  # noqa: E402

VOCAB = 103
MODELS = {  # name: (cell, hidden, layers, skip, batch_size, seq_len)
    "default": ("lstm", 256, 2, True, 32, 64),  # charrnn train's defaults
    "2x512": ("lstm", 512, 2, True, 64, 128),
    "2x1024": ("lstm", 1024, 2, True, 32, 128),
    "gru-2x512": ("gru", 512, 2, True, 64, 128),
    "gru-2x1024": ("gru", 1024, 2, True, 32, 128),
    "plain-2x512": ("plain", 512, 2, False, 64, 128),
    "plain-2x1024": ("plain", 1024, 2, False, 32, 128),
    "plain-gru-2x512": ("plain-gru", 512, 2, False, 64, 128),
    "plain-gru-2x1024": ("plain-gru", 1024, 2, False, 32, 128),
}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine_limits(quick: bool) -> dict:
    """fp32 GEMM peak (best of torch's default path and oneDNN), bf16 GEMM, and memory read bandwidth."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2 * n ** 3
    reps = 3 if quick else 7
    default_gemm = flops / median_time(lambda: torch.mm(a, b), reps)
    linear = nn.Linear(n, n, bias=False)
    gemm = {"torch.mm (default path)": default_gemm}
    try:
        from torch.utils import mkldnn as mkldnn_utils

        dnnl = mkldnn_utils.to_mkldnn(linear)
        x = a.to_mkldnn()
        with torch.no_grad():
            dnnl(x)
            gemm["oneDNN linear"] = flops / median_time(lambda: dnnl(x), reps)
    except (RuntimeError, AttributeError):
        pass
    a16, b16 = a.bfloat16(), b.bfloat16()
    bf16 = flops / median_time(lambda: torch.mm(a16, b16), reps)
    big = torch.ones(256 * 1024 * 1024 // 4 * (1 if quick else 2))  # 256 MiB (512 MiB full): DRAM
    small = torch.ones(16 * 1024 * 1024 // 4)  # 16 MiB: fits the L3
    big.sum(), small.sum()
    dram = big.numel() * 4 / median_time(lambda: big.sum(), reps)
    l3 = small.numel() * 4 / median_time(lambda: small.sum(), reps * 5)
    best = max(gemm, key=gemm.get)
    return {"gemm_fp32_flops": gemm[best], "gemm_fp32_library": best, "gemm_fp32_all": gemm,
            "gemm_bf16_flops": bf16, "dram_read_bytes_per_s": dram, "l3_read_bytes_per_s": l3}


class Plain(nn.Module):
    """The straightforward PyTorch char model: embedding → one multi-layer nn.LSTM (or nn.GRU) → linear."""

    def __init__(self, hidden: int, layers: int, cell: str = "lstm"):
        from charrnn.training import default_embedding  # as wide as charrnn's: even (odd is slow in bf16)

        super().__init__()
        width = default_embedding(VOCAB)
        self.embed = nn.Embedding(VOCAB, width)
        self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(width, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(out), state


def matrix_parameters(model: nn.Module) -> int:
    """Parameters in the recurrent and output weight matrices (each costs 6 FLOPs per character in training)."""
    return sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and not name.startswith("embed"))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would carry over the
    parent's peak (the parent holds the 512 MiB bandwidth buffer), so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_corpus(chars: int) -> Path:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (chars,), generator=g)
    alphabet = [chr(c) for c in range(32, 32 + VOCAB - 1)] + ["\n"]
    path = Path(tempfile.mkdtemp()) / "synthetic.txt"
    path.write_text("".join(alphabet[i] for i in ids.tolist()), encoding="utf-8")
    return path


def per_step_speed(stamps: list[float], chars_per_step: int, warmup: int) -> float:
    """chars/s from the median time between consecutive steps after warm-up: one slow step (a page fault,
    another process) moves a mean but not a median."""
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return chars_per_step / statistics.median(gaps)


def train_ours(cell: str, hidden: int, layers: int, skip: bool, batch: int, seq: int, steps: int, warmup: int,
               precision: str) -> tuple[float, nn.Module]:
    from charrnn.config import Cell, TrainConfig
    from charrnn.training import ModelOptions, TrainJob, run

    corpus = synthetic_corpus(batch * seq * (steps + warmup + 2) + 10_000)
    stamps: list[float] = []
    out = Path(tempfile.mkdtemp()) / "run"
    job = TrainJob(corpus_path=corpus, corpus_name="synthetic", out=out, device="cpu",
                   model=ModelOptions(cell=Cell(cell), hidden=hidden, layers=layers, skip=skip),  # embedded as train embeds
                   train=TrainConfig(batch_size=batch, seq_len=seq, steps=warmup + steps + 1, eval_every=10 ** 9,
                                     val_fraction=0.002, precision=precision))
    run(job, on_progress=lambda p: stamps.append(time.perf_counter()))
    from charrnn import checkpoint

    model, _ = checkpoint.restore_model(checkpoint.load(out / "latest.pt"))
    # stamps[k] follows step k+1; the last step also validates and saves, so it is left out.
    return per_step_speed(stamps[:-1], batch * seq, warmup), model


def train_plain(cell: str, hidden: int, layers: int, batch: int, seq: int, steps: int, warmup: int,
                precision: str) -> tuple[float, nn.Module]:
    model = Plain(hidden, layers, cell)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ids = torch.randint(0, VOCAB, (batch, seq + 1))
    state = None
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else (lambda: torch.enable_grad())

    def step():
        nonlocal state
        with ctx():
            logits, state = model(ids[:, :-1], state)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state = state.detach() if cell == "gru" else tuple(s.detach() for s in state)

    stamps = []
    for _ in range(warmup + steps):
        step()
        stamps.append(time.perf_counter())
    return per_step_speed(stamps, batch * seq, warmup), model


def eval_speed(model: nn.Module, plain: bool, chars: int, bf16: bool) -> float:
    ids = torch.randint(0, VOCAB, (chars,))
    if plain:
        streams = 64
        x = ids[: chars // streams * streams].view(streams, -1)

        @torch.no_grad()
        def score():
            state = None
            for s in range(0, x.shape[1] - 1, 256):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits, state = model(x[:, s: s + 256], state)
        seconds = median_time(score, 1)
        return x.numel() / seconds
    from charrnn.evaluate import losses_per_char

    losses_per_char(model, ids[:5000], bf16=bf16)
    return chars / median_time(lambda: losses_per_char(model, ids, bf16=bf16), 1)


def sample_speed(model: nn.Module, plain: bool, batch: int, length: int) -> float:
    if plain:
        g = torch.Generator().manual_seed(0)

        @torch.inference_mode()
        def loop():
            ids = torch.zeros(batch, 1, dtype=torch.long)
            state = None
            for _ in range(length):
                logits, state = model(ids, state)
                ids = torch.multinomial(logits[:, -1].softmax(-1), 1, generator=g)
        loop()
        return batch * length / median_time(loop, 1)
    from charrnn.config import SampleConfig
    from charrnn.sampling import generate
    from charrnn.vocab import Vocab

    vocab = Vocab([chr(c) for c in range(32, 32 + VOCAB - 1)] + ["\n"])
    config = SampleConfig(length=length, num_samples=batch, temperature=1.0)

    def loop():
        for _ in generate(model, vocab, "a", config, torch.Generator().manual_seed(0)):
            pass
    loop()
    return batch * length / median_time(loop, 1)


def worker(name: str, quick: bool, precision: str, limits: dict) -> dict:
    cell, hidden, layers, skip, batch, seq = MODELS[name]
    steps = {256: (40, 100), 512: (10, 30), 1024: (6, 15)}[hidden][0 if quick else 1]
    plain = cell.startswith("plain")
    if plain:
        train_cps, model = train_plain("gru" if cell == "plain-gru" else "lstm", hidden, layers, batch, seq, steps, 3,
                                       precision)
    else:
        train_cps, model = train_ours(cell, hidden, layers, skip, batch, seq, steps, 3, precision)
    model.eval()
    mats = matrix_parameters(model)
    weight_bytes = mats * 4  # fp32 weights read once per generated character at batch 1
    result = {
        "model": name, "cell": cell, "hidden": hidden, "layers": layers, "skip": skip, "precision": precision,
        "batch": batch, "seq_len": seq, "parameters": sum(p.numel() for p in model.parameters()),
        "matrix_parameters": mats,
        "train_chars_per_s": train_cps,
        "train_fraction_of_limit": train_cps * 6 * mats / limits["gemm_fp32_flops" if precision == "fp32" else "gemm_bf16_flops"],
        "eval_chars_per_s": eval_speed(model, plain, 100_000 if quick else 400_000, precision == "bf16"),
        "sample_b1_chars_per_s": sample_speed(model, plain, 1, 300 if quick else 2000),  # fp32 in every row
        "sample_b32_chars_per_s": sample_speed(model, plain, 32, 100 if quick else 500),
        "sample_b1_bound_chars_per_s": limits["dram_read_bytes_per_s"] / weight_bytes,
    }
    result["sample_b1_fraction_of_bound"] = result["sample_b1_chars_per_s"] / result["sample_b1_bound_chars_per_s"]
    result["eval_over_train"] = result["eval_chars_per_s"] / train_cps
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def table(limits: dict, rows: list[dict]) -> str:
    lines = [
        f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        f"fp32 GEMM peak {limits['gemm_fp32_flops'] / 1e9:.0f} GFLOP/s ({limits['gemm_fp32_library']}); "
        + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in limits["gemm_fp32_all"].items())
        + f"; bf16 GEMM {limits['gemm_bf16_flops'] / 1e9:.0f} GFLOP/s",
        f"memory read: DRAM {limits['dram_read_bytes_per_s'] / 1e9:.1f} GB/s, L3 {limits['l3_read_bytes_per_s'] / 1e9:.1f} GB/s",
        "",
        f"{'model':<18}{'prec':<6}{'params':>8}{'train c/s':>11}{'of limit':>9}{'eval c/s':>10}{'eval/trn':>9}"
        f"{'b1 c/s':>8}{'of bound':>9}{'b32 c/s':>9}{'RSS MB':>8}",
    ]
    for r in rows:
        lines.append(f"{r['model']:<18}{r['precision']:<6}{r['parameters'] / 1e6:>7.2f}M{r['train_chars_per_s']:>11,.0f}"
                     f"{r['train_fraction_of_limit']:>9.0%}{r['eval_chars_per_s']:>10,.0f}{r['eval_over_train']:>9.1f}"
                     f"{r['sample_b1_chars_per_s']:>8,.0f}{r['sample_b1_fraction_of_bound']:>9.0%}"
                     f"{r['sample_b32_chars_per_s']:>9,.0f}{r['peak_rss_mb']:>8,.0f}")
    by = {(r["model"], r["precision"]): r for r in rows}
    for ours, plain in (("2x512", "plain-2x512"), ("2x1024", "plain-2x1024"), ("gru-2x512", "plain-gru-2x512"),
                        ("gru-2x1024", "plain-gru-2x1024")):
        if (ours, "fp32") in by and (plain, "fp32") in by:
            a, b = by[(ours, "fp32")], by[(plain, "fp32")]
            lines.append(f"ours/plain {ours}: training {a['train_fraction_of_limit'] / b['train_fraction_of_limit']:.2f}x "
                         f"(of-limit ratio; raw chars/s {a['train_chars_per_s'] / b['train_chars_per_s']:.2f}x), "
                         f"batch-1 sampling {a['sample_b1_chars_per_s'] / b['sample_b1_chars_per_s']:.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and the default model family only")
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--bf16", action="store_true", help="also measure every model with bf16 autocast")
    parser.add_argument("--json", type=Path, default=Path("bench/out/results.json"), help="where to write the results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["model"], spec["quick"], spec["precision"], spec["limits"])))
        return
    names = args.models.split(",") if args.models else (
        ["default", "2x512", "plain-2x512", "gru-2x512", "plain-gru-2x512"] if args.quick else list(MODELS))
    limits = machine_limits(args.quick)
    rows = []
    jobs = [(n, "fp32") for n in names] + ([(n, "bf16") for n in names] if args.bf16 else [])
    for name, precision in jobs:
        print(f"measuring {name} ({precision}) ...", file=sys.stderr, flush=True)
        spec = json.dumps({"model": name, "quick": args.quick, "precision": precision, "limits": limits})
        done = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(limits, rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "torch": torch.__version__,
                                     "limits": limits, "models": rows}, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
