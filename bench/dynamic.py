"""Dynamic evaluation's settings against a held-out file: one JSON line per setting, static score alongside.

    python bench/dynamic.py RUN_DIR HELD_OUT.txt                         # the default grid
    python bench/dynamic.py RUN_DIR HELD_OUT.txt --lr 1e-3,3e-3 --window 50 --decay 0,0.01
    python bench/dynamic.py RUN_DIR HELD_OUT.txt --lr 8e-4,5e-4+1.5e-3 --share 0.003,0.01,0.03
    python bench/dynamic.py RUN_DIR HELD_OUT.txt --lr 3e-4+2.5e-3,3e-4+2.5e-3+1.5e-3@16

Each setting scores the whole file once, adapting as it goes (charrnn eval --dynamic); "a+b" is one setting of
two steps, scored as their fixed-share mixture (--share); "b@16" gives that step its own window (otherwise
--window's). The numbers depend on the model and the text, not on
the machine, so any run of this script can be compared with any other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402

import charrnn  # noqa: E402
from charrnn.config import DYNAMIC_WINDOW, EvalConfig  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def step_sets(text: str) -> list[tuple[tuple[float, int | None], ...]]:
    """"a+b@16,c": [((a, None), (b, 16)), ((c, None),)]: steps, each with its own window or None."""
    def step(item: str) -> tuple[float, int | None]:
        lr, _, window = item.partition("@")
        return float(lr), int(window) if window else None
    return [tuple(step(item) for item in setting.split("+")) for setting in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory or .pt file")
    parser.add_argument("file", help="held-out text the run never trained on")
    # The default grid steps around charrnn's own --dynamic-lr, at its own window and decay.
    parser.add_argument("--lr", type=step_sets, default=step_sets("3e-4,8e-4,1.5e-3@16," + "+".join(f"{lr:g}" for lr in EvalConfig.dynamic_lr)))
    parser.add_argument("--share", type=floats, default=[EvalConfig.dynamic_share])
    # --window applies to steps without their own; with none given anywhere, charrnn's default (the default pair's own).
    parser.add_argument("--window", type=lambda t: [int(v) for v in t.split(",")], default=[None])
    parser.add_argument("--decay", type=floats, default=[EvalConfig.dynamic_decay])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = charrnn.load(args.run, device="cpu")
    static = model.evaluate(args.file).bits_per_char
    for window, steps, decay, share in itertools.product(args.window, args.lr, args.decay, args.share):
        lr, own = [lr for lr, _ in steps], [w for _, w in steps]
        windows = window if all(w is None for w in own) else [w or window or DYNAMIC_WINDOW for w in own]
        start = time.perf_counter()
        result = model.evaluate(args.file, dynamic=True, dynamic_lr=lr, dynamic_share=share, dynamic_window=windows,
                                dynamic_decay=decay)
        print(json.dumps({"run": args.run, "file": args.file, "static_bits_per_char": round(static, 4),
                          "lr": lr, "share": share, "window": [w for _, w, _ in result.dynamic_steps], "decay": decay,
                          "dynamic_bits_per_char": round(result.bits_per_char, 4),
                          "each_step_bits_per_char": [round(b, 4) for _, _, b in result.dynamic_steps_bits_per_char],
                          "gain": round(static - result.bits_per_char, 4),
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
