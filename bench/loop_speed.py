"""How fast charrnn train's whole loop runs on a device, against the bare step of bench/step_time.py.

    python bench/loop_speed.py CORPUS --device cuda                          # 2x512 and 2x1024, batch 32
    python bench/loop_speed.py CORPUS --device cuda --shapes 2x1024b128 --steps 800
    python bench/loop_speed.py CORPUS --device cuda --precision fp32 bf16  # each shape in each, taking turns

For each shape (LAYERSxHIDDEN, optionally bBATCH) it trains with `charrnn.train` for --steps fixed steps, all
else at train's defaults (validation only at the end), and times the steps between the first --warm-up steps
and the final validation from the progress reports: what the loop adds to a step (moving the batch to the device,
clipping, reading the loss back, the progress bar) shows up here and not in step_time.py. Compare two versions of
charrnn by running this twice, each with its own PYTHONPATH, on the same machine in one sitting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import charrnn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import shape  # noqa: E402  (bench/step_time.py: the same shape names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("--shapes", nargs="+", type=shape, default=[shape("2x512"), shape("2x1024")])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warm-up", type=int, default=100, help="steps left out of the timing")
    parser.add_argument("--precision", nargs="+", default=["auto"], help="train's --precision; several take turns")
    args = parser.parse_args()
    print(f"# charrnn from {Path(charrnn.__file__).parent}")
    for s in args.shapes:
        for precision in args.precision:
            seen: list[tuple[int, float]] = []
            with tempfile.TemporaryDirectory() as out:
                result = charrnn.train(args.corpus, cell=s.cell, layers=s.layers, hidden=s.hidden, batch_size=s.batch,
                                       seq_len=s.seq_len, steps=args.steps, eval_every=args.steps, device=args.device,
                                       precision=precision, out=out, force=True,
                                       on_progress=lambda p, seen=seen: seen.append((p.step, time.perf_counter())))
            timed = [(step, t) for step, t in seen if args.warm_up <= step < args.steps]  # not the final validation
            (first, start), (last, end) = timed[0], timed[-1]
            per_step = (end - start) / (last - first)
            print(f"{s}, {precision}: {per_step * 1000:.2f} ms/step in the loop, {s.batch * s.seq_len / per_step:,.0f} "
                  f"chars/s (steps {first} to {last}); validation {result.best_val_bits:.4f} bits/char", flush=True)


if __name__ == "__main__":
    main()
