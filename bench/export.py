"""The exported page: its size and the held-out bits/char for each weight format, and its speed in headless Chromium.

    python bench/export.py runs/cpp                 # a trained run: sizes, bits/char cost, chars/s
    python bench/export.py runs/cpp --wide 1024     # also a 2 x WIDE LSTM of the same vocabulary (size, chars/s)

bits/char is computed in Python on the same rounded weights the page holds (`Model.rounded`), over the run's
held-out split; chars/s is the page's own batch-1 stepper, timed in one synchronous loop (`#bench=N`). For an
ensemble, the int8 page is also timed with its "members" box at 1, 2, 4, ... and all of them (`#members=K`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import charrnn  # noqa: E402
from charrnn import checkpoint  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        sys.exit("no headless Chromium: apt-get install chromium")
    return found


def page_speed(page: str, chars: int, members: int | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.html"
        path.write_text(page)
        dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp}/p",
                              "--dump-dom", f"{path.as_uri()}#bench={chars}&temperature=0.8" + (f"&members={members}" if members else "")],
                             capture_output=True, text=True, timeout=600).stdout
    match = re.search(r'data-bench-chars-per-second="([0-9.]+)"', dom)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--wide", type=int, default=None, help="also measure a 2 x WIDE LSTM (random weights)")
    parser.add_argument("--chars", type=int, default=3000, help="characters timed in the browser")
    args = parser.parse_args()
    model = charrnn.load(args.run, device="cpu")
    print(f"{model!r}; {model.network.parameter_count():,} parameters")
    exact = model.evaluate().bits_per_char
    print(f"held-out bits/char, exact fp32 weights: {exact:.4f}")
    print(f"{'weights':<8}{'page MB':>9}{'bits/char':>11}{'change':>9}{'chars/s':>10}")
    for weights in ("fp32", "fp16", "int8"):
        page = model.export_html(weights=weights)
        bpc = model.rounded(weights).evaluate().bits_per_char
        print(f"{weights:<8}{len(page.encode()) / 1e6:>9.2f}{bpc:>11.4f}{bpc - exact:>+9.4f}"
              f"{page_speed(page, args.chars):>10,.0f}", flush=True)
    total = model.config.members
    if total > 1:
        page = model.export_html(weights="int8")
        for k in sorted({*(2**n for n in range(total.bit_length()) if 2**n < total), total}):
            print(f"int8, the first {k} of {total} members (the page's box): {page_speed(page, args.chars, k):,.0f} chars/s",
                  flush=True)
    if args.wide:
        state = checkpoint.load(checkpoint.resolve(args.run))
        config = ModelConfig.from_dict({**state["model_config"], "hidden": args.wide})
        torch.manual_seed(0)
        wide = CharRNN(config).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "wide.pt"
            checkpoint.save(path, {**state, "model_config": config.to_dict(), "model": wide.state_dict(),
                                   "history": {"train": [], "val": []}})
            wide_model = charrnn.load(path, device="cpu")
            print(f"2 x {args.wide} LSTM, {wide.parameter_count():,} parameters (random weights):")
            for weights in ("fp16", "int8"):
                page = wide_model.export_html(weights=weights)
                print(f"{weights:<8}{len(page.encode()) / 1e6:>9.2f}{'':>20}{page_speed(page, args.chars // 5):>10,.0f}")


if __name__ == "__main__":
    main()
