"""Batch-1 sampling speed of trained runs, as `charrnn sample` writes: characters a second of `Model.generate`.

    python bench/sample_speed.py RUN [RUN ...] [--threads 2] [--chars 4000]

Each run: a 500-character warm-up, then the best of 3 timings of `--chars` characters at temperature 0.8 (fp32 on
the CPU). Compare runs only inside one call, alone on the machine (bench/QUALITY.md, session 50: one network
against an ensemble of 4).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chars", type=int, default=4000)
    args = parser.parse_args()
    for run in args.runs:
        model = charrnn.load(run, device="cpu", threads=args.threads)
        model.generate(length=500, random_seed=1)
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            model.generate(length=args.chars, random_seed=1)
            best = max(best, args.chars / (time.perf_counter() - start))
        print(f"{run}: {model.config.describe()}: {best:,.0f} chars/s (best of 3, {args.threads} threads)", flush=True)


if __name__ == "__main__":
    main()
