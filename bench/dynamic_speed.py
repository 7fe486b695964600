"""Dynamic evaluation's speed with its adapting networks side by side (charrnn.lanes) against in turn.

    python bench/dynamic_speed.py                                   # a few shapes, 3 rounds
    python bench/dynamic_speed.py --shapes 32x2x128 --chars 600

What charrnn eval --dynamic runs on a text (the default two steps, windows 64 and 16), for untrained networks of
an 80-character alphabet: "in turn" steps every adapting network on this thread at --threads threads, "lanes" puts
them side by side, one thread each (what charrnn does for an ensemble on the CPU since session 59). Both compute the
same losses (tests/test_lanes.py). The two take turns, round by round, so a passing load slows them alike.
Prints characters per second both ways and their ratio, with the CPU's name and a GEMM figure.
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

from charrnn import evaluate  # noqa: E402
from charrnn.config import EvalConfig, ModelConfig  # noqa: E402
from charrnn.model import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="1x2x128,1x2x256,2x2x128,2x2x256,4x2x128,8x2x128",
                        help="MEMBERSxLAYERSxHIDDEN, comma-separated")
    parser.add_argument("--chars", type=int, default=1500, help="characters scored per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}; torch {torch.__version__}; {args.threads} threads; {gemm_summary(torch.device('cpu'))}")
    config = EvalConfig(dynamic=True)
    rule = evaluate.dynamic_lanes
    for shape in args.shapes.split(","):
        members, layers, hidden = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        model = build(ModelConfig(vocab_size=80, layers=layers, hidden=hidden, embedding=64, members=members))
        ids = torch.randint(0, 80, (args.chars + 1,))
        speeds: dict[str, list[float]] = {"in turn": [], "lanes": []}
        losses = {}
        for _ in range(args.rounds):
            for way in speeds:
                evaluate.dynamic_lanes = (lambda *a: 1) if way == "in turn" else (
                    lambda model, networks, threads: min(networks, threads))
                start = time.perf_counter()
                losses[way] = evaluate.dynamic_step_losses(model, ids, config=config)
                speeds[way].append(args.chars / (time.perf_counter() - start))
        evaluate.dynamic_lanes = rule
        same = torch.allclose(losses["in turn"], losses["lanes"], atol=1e-5)
        turn, lanes = (statistics.median(v) for v in speeds.values())
        print(f"{shape:>10}: in turn {turn:7.0f} chars/s, lanes {lanes:7.0f}, lanes / in turn {lanes / turn:.2f}"
              f"{'' if same else '  (losses differ!)'}; charrnn runs {'lanes' if rule(model, 2, 2) > 1 else 'in turn'}",
              flush=True)


if __name__ == "__main__":
    main()
