"""Training-step time of model shapes against each other: how many steps each gets in the same minutes.

    python bench/step_time.py                          # 2x256 (the 5-minute default here) against its neighbours
    python bench/step_time.py 2x256 3x192 --threads 2  # any LAYERSxHIDDEN shapes
    python bench/step_time.py 2x256 2x256b64           # ...and batch sizes (LAYERSxHIDDENbBATCH)
    python bench/step_time.py 2x256 2x256b64s32 gru2x256  # ...window lengths (sSEQ) and cells (gru, rnn)
    python bench/step_time.py 2x256 2x384 --bf16       # in bf16, as train runs where the CPU has it natively
    python bench/step_time.py 2x192 2x192e32 --vocab 113  # embedding sizes (eEMBEDDING) for a larger alphabet
    python bench/step_time.py 2x512 2x1024 --device cuda --bf16 --weight-drop 0.2  # on a GPU, with weight drop

One training step (forward, backward, and charrnn train's fused AdamW update) of charrnn's own model (an LSTM
unless the shape names its cell) on batch 32 x 64 characters (or the shape's own) with a 65-character alphabet
(tinyshakespeare's; --vocab sets another) embedded in as many dimensions as train gives it (the alphabet's size rounded up
to even, at most 128) or the shape's own, in fp32, or with --bf16 under bf16 autocast, as charrnn train runs where `auto` picks
it (charrnn/devices.py). Each shape's FLOP/s counts 6 x parameters per character, as charrnn's plan does (charrnn/plan.py).
The shapes take turns, so a passing load slows them alike; it prints each one's milliseconds per step, its steps
per step of the first shape and its characters per second against the first's. Use it to compare shapes at equal
time with fixed-step runs of bench/quality.py (whose results do not depend on the machine's speed).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import device_name, gemm_summary, synchronize  # noqa: E402  (bench/machine.py)

from charrnn.config import Cell, TrainConfig  # noqa: E402
from charrnn.devices import autocast  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.training import ModelOptions, _adam  # noqa: E402  (the model and optimiser as charrnn train builds them)

VOCAB, BATCH, SEQ_LEN = 65, 32, 64


class Shape(NamedTuple):
    cell: Cell
    layers: int
    hidden: int
    batch: int
    seq_len: int
    embedding: int | None  # None: as charrnn train sizes it for the alphabet (training.default_embedding)

    def __str__(self) -> str:
        cell = "" if self.cell is Cell.LSTM else self.cell.value + " "
        embedding = f", embedding {self.embedding}" if self.embedding else ""
        return f"{cell}{self.layers}x{self.hidden} batch {self.batch} x {self.seq_len}{embedding}"


def shape(text: str) -> Shape:
    """[CELL]LAYERSxHIDDEN, optionally followed by bBATCH, sSEQ_LEN and eEMBEDDING."""
    match = re.fullmatch(r"(lstm|gru|rnn)?(\d+)x(\d+)(?:b(\d+))?(?:s(\d+))?(?:e(\d+))?", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not [CELL]LAYERSxHIDDEN[bBATCH][sSEQ_LEN][eEMBEDDING] (e.g. 2x256b64s32e32)")
    return Shape(Cell(match[1] or "lstm"), int(match[2]), int(match[3]), int(match[4] or BATCH), int(match[5] or SEQ_LEN),
                 int(match[6]) if match[6] else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="*", type=shape, default=[shape(s) for s in ("2x256", "2x192", "3x192", "2x384")])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=6, help="turns per shape (the median of them is kept)")
    parser.add_argument("--steps", type=int, default=10, help="steps per turn")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="alphabet size (65: tinyshakespeare; 113: cpp)")
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast (needs a CPU or GPU that runs it)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--weight-drop", type=float, default=0.0, help="as train's --weight-drop (DropConnect on W_hh)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab, device = args.vocab, torch.device(args.device)
    models = [CharRNN(ModelOptions(cell=s.cell, layers=s.layers, hidden=s.hidden, embedding=s.embedding,
                                   weight_drop=args.weight_drop).for_vocab(vocab)).to(device)
              for s in args.shapes]  # built as train builds it (embedding None: train's size for the alphabet)
    optimizers = [_adam(m, TrainConfig.lr, device, TrainConfig.weight_decay) for m in models]
    batches = [(torch.randint(0, vocab, (s.batch, s.seq_len), device=device),
                torch.randint(0, vocab, (s.batch, s.seq_len), device=device)) for s in args.shapes]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for model, optimizer, (x, y), kept in zip(models, optimizers, batches, times):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                with autocast(device, args.bf16):
                    logits, _ = model(x)
                loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            synchronize(device)
            kept.append((time.perf_counter() - start) / args.steps)
    per_step = [statistics.median(kept[1:]) for kept in times]
    print(f"# {device_name(device)}, {torch.get_num_threads()} threads, {'bf16' if args.bf16 else 'fp32'} steps"
          f"{f', weight drop {args.weight_drop:g}' if args.weight_drop else ''}, {gemm_summary(device)}")
    first = args.shapes[0]
    for s, model, seconds in zip(args.shapes, models, per_step):
        steps = per_step[0] / seconds
        chars = steps * s.batch * s.seq_len / (first.batch * first.seq_len)
        chars_per_second = s.batch * s.seq_len / seconds
        print(f"{s}: {model.parameter_count():,} parameters, {seconds * 1000:.2f} ms/step, "
              f"{chars_per_second:,.0f} chars/s, {6 * model.parameter_count() * chars_per_second / 1e9:,.0f} GFLOP/s, "
              f"{steps:.2f} steps per {first} step ({chars:.2f} times its characters per second)")


if __name__ == "__main__":
    main()
