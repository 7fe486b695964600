"""Same seed, same run, under load: two `--steps` runs with `--precision auto` while another training loads the CPU.

    python bench/same_seed.py              # 5 pairs beside a background `charrnn train` (about 2 minutes)
    python bench/same_seed.py --pairs 10

Prints, per pair, whether the two runs' weights are bit-identical and which arithmetic auto chose.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402

TEXT = "int main(void) {\n    printf(\"hello, world\\n\");\n    return 0;\n}\n" * 400
RUN = ["--steps", "12", "--hidden", "64", "--seq-len", "32", "--batch-size", "8", "--random-seed", "1",
       "--precision", "auto", "--quiet"]


def charrnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "charrnn", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    corpus = work / "c.txt"
    corpus.write_text(TEXT)
    load = subprocess.Popen(charrnn("train", str(corpus), "--hidden", "256", "--minutes", "30", "--quiet",
                                    "--out", str(work / "load")), stderr=subprocess.DEVNULL)
    identical = 0
    try:
        for pair in range(args.pairs):
            states = []
            for k in range(2):
                out = work / f"pair{pair}-{k}"
                subprocess.run(charrnn("train", str(corpus), *RUN, "--out", str(out)), check=True)
                states.append(torch.load(out / "latest.pt", weights_only=True))
            a, b = states
            same = all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
            identical += same
            print(f"pair {pair + 1}: weights {'identical' if same else 'DIFFER'}; arithmetic "
                  f"{'bf16' if a['bf16'] else 'fp32'} / {'bf16' if b['bf16'] else 'fp32'}", flush=True)
    finally:
        load.terminate()
        load.wait()
    print(f"{identical} of {args.pairs} pairs identical while another charrnn train ran beside them")


if __name__ == "__main__":
    main()
