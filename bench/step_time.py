"""Training-step time of model shapes against each other: how many steps each gets in the same minutes.

    python bench/step_time.py                          # 2x256 (the 5-minute default here) against its neighbours
    python bench/step_time.py 2x256 3x192 --threads 2  # any LAYERSxHIDDEN shapes
    python bench/step_time.py 2x256 2x256b64           # ...and batch sizes (LAYERSxHIDDENbBATCH)

One training step (forward, backward, and charrnn train's fused AdamW update) of charrnn's own model on batch
32 (or the shape's own) x 64 with a 65-character alphabet (tinyshakespeare's), in fp32. The shapes take turns, so
a passing load slows them alike; it prints each one's milliseconds per step, its steps per step of the first shape
and its characters per second against the first's. Use it to compare shapes at equal time with fixed-step runs of
bench/quality.py (whose results do not depend on the machine's speed).
"""

from __future__ import annotations

import argparse
import re
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


def shape(text: str) -> tuple[int, int, int]:
    """LAYERSxHIDDEN, optionally followed by bBATCH."""
    match = re.fullmatch(r"(\d+)x(\d+)(?:b(\d+))?", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAYERSxHIDDEN or LAYERSxHIDDENbBATCH (e.g. 2x256b64)")
    return int(match[1]), int(match[2]), int(match[3] or BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="*", type=shape, default=[(2, 256, BATCH), (2, 192, BATCH), (3, 192, BATCH), (2, 384, BATCH)])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=6, help="turns per shape (the median of them is kept)")
    parser.add_argument("--steps", type=int, default=10, help="steps per turn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [CharRNN(ModelConfig(vocab_size=VOCAB, layers=layers, hidden=hidden, embedding=VOCAB))  # as train sizes it
              for layers, hidden, _ in args.shapes]
    optimizers = [_adam(m, TrainConfig.lr, torch.device("cpu"), TrainConfig.weight_decay) for m in models]
    batches = [(torch.randint(0, VOCAB, (batch, SEQ_LEN)), torch.randint(0, VOCAB, (batch, SEQ_LEN)))
               for _, _, batch in args.shapes]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for model, optimizer, (x, y), kept in zip(models, optimizers, batches, times):
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
    first_layers, first_hidden, first_batch = args.shapes[0]
    for (layers, hidden, batch), model, seconds in zip(args.shapes, models, per_step):
        steps = per_step[0] / seconds
        print(f"{layers}x{hidden} batch {batch}: {model.parameter_count():,} parameters, {seconds * 1000:.1f} ms/step, "
              f"{steps:.2f} steps per {first_layers}x{first_hidden} batch {first_batch} step "
              f"({steps * batch / first_batch:.2f} times its characters per second)")


if __name__ == "__main__":
    main()
