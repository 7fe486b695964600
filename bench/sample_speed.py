"""Batch-1 sampling speed of trained runs, as `charrnn sample` writes: characters a second of `Model.generate`.

    python bench/sample_speed.py RUN [RUN ...] [--threads 2] [--chars 4000]
    python bench/sample_speed.py RUN [RUN ...] --products     # the sampler's products: oneDNN against torch.addmm

Each run: a 500-character warm-up, then the best of 3 timings of `--chars` characters at temperature 0.8 (fp32 on
the CPU). Compare runs only inside one call, alone on the machine (bench/QUALITY.md, session 50: one network
against an ensemble of 4). With `--products` each run is timed with its single network's batch-1 products through
oneDNN and through torch.addmm, in alternating order over 6 rounds (best of each), and the line says which one
the sampler's rule (`charrnn.cpu.batch1_products`) picks for that width.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import charrnn  # noqa: E402
from charrnn import cpu  # noqa: E402


def chars_per_second(model, chars: int) -> float:
    start = time.perf_counter()
    model.generate(length=chars, random_seed=1)
    return chars / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chars", type=int, default=4000)
    parser.add_argument("--products", action="store_true", help="time oneDNN's products against torch.addmm's")
    args = parser.parse_args()
    for run in args.runs:
        model = charrnn.load(run, device="cpu", threads=args.threads)
        model.generate(length=500, random_seed=1)
        if args.products:
            rule = cpu.BATCH1_ONEDNN_FROM_HIDDEN
            best = {"oneDNN": 0.0, "addmm": 0.0}
            for round_ in range(6):
                for name in sorted(best, reverse=round_ % 2 == 1):
                    cpu.BATCH1_ONEDNN_FROM_HIDDEN = 0 if name == "oneDNN" else sys.maxsize  # the stepper is built per call
                    model.generate(length=300, random_seed=1)
                    best[name] = max(best[name], chars_per_second(model, args.chars))
            cpu.BATCH1_ONEDNN_FROM_HIDDEN = rule
            picks = "oneDNN" if cpu.batch1_products(next(model.network.parameters()), model.config.hidden) else "addmm"
            print(f"{run}: {model.config.describe()}: oneDNN {best['oneDNN']:,.0f}, addmm {best['addmm']:,.0f} chars/s "
                  f"(addmm/oneDNN {best['addmm'] / best['oneDNN']:.2f}; the rule picks {picks}; threads: {args.threads})",
                  flush=True)
            continue
        best_rate = max(chars_per_second(model, args.chars) for _ in range(3))
        print(f"{run}: {model.config.describe()}: {best_rate:,.0f} chars/s (best of 3, threads: {args.threads})", flush=True)


if __name__ == "__main__":
    main()
