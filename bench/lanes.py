"""An ensemble's training step with its members stepped in turn against side by side (charrnn.lanes), at equal threads.

    python bench/lanes.py                         # 8 members of 2x64, 2x128, 2x192 and 2x256, in bf16 where native
    python bench/lanes.py --members 16 --shapes 2x128 --fp32

One step is what charrnn train does for an ensemble: every member's forward, loss, backward and gradient clip, then
the fused AdamW update of all of them, on batch 32 x 64 of a 76-character alphabet (the GPL's) embedded in 76. "In
turn" is the loop at --threads threads (each member's products on all of them), "lanes" the same step with one
member per thread at a time; both compute the same weights (tests/test_lanes.py). The two take turns, so a passing
load slows them alike. Prints each shape's milliseconds per step both ways, per member, the ratio, and the FLOP/s
that counts 6 x parameters per character (as charrnn.plan does), with the CPU's name and a GEMM figure.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import cpu_name, gemm_summary  # noqa: E402  (bench/machine.py)

from charrnn import kernels  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.devices import has_native_bf16  # noqa: E402
from charrnn.lanes import Lanes, step_in_turn  # noqa: E402
from charrnn.model import build, detach_state  # noqa: E402

VOCAB, BATCH, SEQ, CLIP = 76, 32, 64, 5.0


def stepper(shape: str, count: int, bf16: bool, lanes: Lanes | None):
    layers, hidden = (int(n) for n in shape.split("x"))
    torch.manual_seed(0)
    model = build(ModelConfig(vocab_size=VOCAB, layers=layers, hidden=hidden, embedding=VOCAB, members=count,
                              weight_drop=0.1)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randint(0, VOCAB, (2, BATCH, SEQ))
    state = [model.initial_state(BATCH)]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.seed_members()
        if lanes is None:
            _, hidden_state = step_in_turn(model, model, x, y, state[0], bf16=bf16, grad_clip=CLIP)
        else:
            _, hidden_state = lanes.step(model, x, y, state[0], bf16=bf16, grad_clip=CLIP)
        optimizer.step()
        state[0] = detach_state(hidden_state)

    return step, model.parameter_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["2x64", "2x128", "2x192", "2x256"])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fp32", action="store_true", help="fp32 even where the CPU multiplies bf16 natively")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (after 3 warm-up steps)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = kernels.keep_freed_memory(torch.device("cpu"))  # as charrnn train does (CHARRNN_KEEP_FREED_MEMORY=0: not)
    bf16 = not args.fp32 and has_native_bf16(torch.device("cpu"))
    print(f"{cpu_name()}; {gemm_summary(torch.device('cpu'))}; {args.threads} threads, "
          f"{'bf16 autocast' if bf16 else 'fp32'}, {args.members} members, batch {BATCH}x{SEQ}, freed memory {'kept' if kept else 'returned'}")
    with Lanes(min(args.threads, args.members), args.threads) as lanes:
        for shape in args.shapes:
            ways = {"in turn": stepper(shape, args.members, bf16, None),
                    "lanes": stepper(shape, args.members, bf16, lanes)}
            times: dict[str, list[float]] = {name: [] for name in ways}
            for step, _ in ways.values():  # warm-up
                for _ in range(3):
                    step()
            for _ in range(args.rounds):  # the two take turns
                for name, (step, _) in ways.items():
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    times[name].append((time.perf_counter() - start) / args.steps)
            parameters = ways["lanes"][1]
            ms = {name: statistics.median(t) * 1000 for name, t in times.items()}
            flops = {name: 6 * parameters * BATCH * SEQ / (m / 1000) / 1e9 for name, m in ms.items()}
            print(f"{shape} x {args.members}: in turn {ms['in turn']:.1f} ms/step ({ms['in turn'] / args.members:.2f} "
                  f"a member, {flops['in turn']:.0f} GFLOP/s); lanes {ms['lanes']:.1f} ms/step "
                  f"({ms['lanes'] / args.members:.2f} a member, {flops['lanes']:.0f} GFLOP/s); "
                  f"lanes {ms['in turn'] / ms['lanes']:.2f}x faster", flush=True)


if __name__ == "__main__":
    main()
