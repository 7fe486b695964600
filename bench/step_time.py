"""Training-step time of model shapes against each other: how many steps each gets in the same minutes.

    python bench/step_time.py                          # 2x256 (the 5-minute default here) against its neighbours
    python bench/step_time.py 2x256 3x192 --threads 2  # any LAYERSxHIDDEN shapes

One training step (forward, backward, and charrnn train's fused AdamW update) of charrnn's own model on batch
32 x 64 with a 65-character alphabet (tinyshakespeare's), in fp32. The shapes take turns, so a passing load slows them alike; it prints
each one's milliseconds per step and its steps per step of the first shape. Use it to compare shapes at equal
time with fixed-step runs of bench/quality.py (whose results do not depend on the machine's speed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import cpu_name, gemm_gflops  # noqa: E402  (bench/machine.py)

from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.training import _adam  # noqa: E402  (the optimiser exactly as charrnn train builds it)

VOCAB, BATCH, SEQ_LEN = 65, 32, 64


def shape(text: str) -> tuple[int, int]:
    layers, hidden = text.lower().split("x")
    return int(layers), int(hidden)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="*", type=shape, default=[(2, 256), (2, 192), (3, 192), (2, 384)])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=6, help="turns per shape (the median of them is kept)")
    parser.add_argument("--steps", type=int, default=10, help="steps per turn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [CharRNN(ModelConfig(vocab_size=VOCAB, layers=layers, hidden=hidden, embedding=VOCAB))  # as train sizes it
              for layers, hidden in args.shapes]
    optimizers = [_adam(m, TrainConfig.lr, torch.device("cpu"), TrainConfig.weight_decay) for m in models]
    x, y = torch.randint(0, VOCAB, (BATCH, SEQ_LEN)), torch.randint(0, VOCAB, (BATCH, SEQ_LEN))
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for model, optimizer, kept in zip(models, optimizers, times):
            start = time.perf_counter()
            for _ in range(args.steps):
                logits, _ = model(x)
                loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            kept.append((time.perf_counter() - start) / args.steps)
    per_step = [statistics.median(kept[1:]) for kept in times]
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, fp32 GEMM {gemm_gflops():.0f} GFLOP/s")
    for (layers, hidden), model, seconds in zip(args.shapes, models, per_step):
        print(f"{layers}x{hidden}: {model.parameter_count():,} parameters, {seconds * 1000:.1f} ms/step, "
              f"{per_step[0] / seconds:.2f} steps per {args.shapes[0][0]}x{args.shapes[0][1]} step")


if __name__ == "__main__":
    main()
