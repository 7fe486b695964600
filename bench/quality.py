"""Quality per minute, by the held-out protocol: train on the first part of a text, score text the run never saw.

    python bench/quality.py ../shared/corpora/tinyshakespeare.txt --minutes 5
    python bench/quality.py ../shared/corpora/tinyshakespeare.txt --minutes 5 -- --dropout 0.2 --hidden 512
    python bench/quality.py cpp --minutes 5            # a built-in corpus, assembled as `charrnn corpus build` does
    python bench/quality.py python --steps 33750 --planned-as cpu-bf16 --minutes 60 -- --device cuda
                                                       # what that class plans for an hour, run for fixed steps

A file (or a built-in corpus's text) is cut at 90%: `charrnn train` gets the first 90% (its own validation, for
best.pt, is 5% of that), and `charrnn eval` scores the last 10%, which training never read. With `--held-out FILE`
the run trains on the whole corpus and scores FILE (the tenth of a text of a few thousand characters is too little
to score). Arguments after `--` go to `charrnn train` as they are.
Every result line carries the CPU's name and an fp32 GEMM figure measured in the same run, since a
`--minutes` budget buys more steps on a faster day, and the model the run trained (the plan picks the width
from the budget: with --steps too). The work folder is kept, and named, for bench/dynamic.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from machine import cpu_name, gemm_gflops  # noqa: E402  (bench/machine.py)

from charrnn import corpora  # noqa: E402
from charrnn.config import bits  # noqa: E402


def charrnn(*args: str, command: tuple[str, ...] = ("-m", "charrnn")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command, *args], capture_output=True, text=True, check=True)


def split_held_out(text: str, work: Path) -> tuple[Path, Path]:
    """The protocol's split, written into `work`: train.txt, the first 90% of the text, and held_out.txt, the rest."""
    cut = int(len(text) * 0.9)
    train_text, held_out = work / "train.txt", work / "held_out.txt"
    train_text.write_text(text[:cut], encoding="utf-8")
    held_out.write_text(text[cut:], encoding="utf-8")
    return train_text, held_out


def threads_option(train_options: list[str]) -> str | None:
    """The value of --threads among train's options, if given (`--threads 1` or `--threads=1`)."""
    for n, option in enumerate(train_options):
        if option == "--threads" and n + 1 < len(train_options):
            return train_options[n + 1]
        if option.startswith("--threads="):
            return option.split("=", 1)[1]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="a text file (split 90/10 here) or a built-in corpus name")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=None,
                        help="a fixed number of steps instead of --minutes: the result no longer depends on the machine's speed or load")
    parser.add_argument("--work", type=Path, default=None, help="where the split and the run go (default: a temp dir)")
    parser.add_argument("--held-out", type=Path, default=None,
                        help="score this file instead: train on the whole corpus (for texts too small to spare 10%%)")
    parser.add_argument("--planned-as", metavar="CLASS", default=None,
                        help="with --steps: train with what device class CLASS plans for --minutes (bench/planned_as.py)")
    args, train_options = parser.parse_known_args()
    if args.planned_as and not args.steps:
        parser.error("--planned-as runs a fixed number of steps: give --steps (and --minutes, the budget it plans for)")
    train_options = [o for o in train_options if o != "--"]
    work = args.work or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    gemm_before = gemm_gflops()
    source = corpora.build(args.corpus) if args.corpus in corpora.names() else Path(args.corpus)
    if args.held_out:
        train_text, held_out = source, args.held_out
    else:
        train_text, held_out = split_held_out(source.read_text(encoding="utf-8"), work)
    run = work / "run"
    budget = ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes)]
    trainer = ((str(Path(__file__).with_name("planned_as.py")), args.planned_as, str(args.minutes), "--")
               if args.planned_as else ("-m", "charrnn", "train"))
    trained = charrnn(str(train_text), *budget, "--out", str(run), "--force", "--quiet", *train_options, command=trainer)
    # Scored at train's --threads: two runs side by side at one thread each would otherwise score with two
    # threads each on two cores, which made the scoring several times slower.
    threads = threads_option(train_options)
    report = json.loads(charrnn("eval", str(held_out), "-c", str(run), "--json",
                                *(["--threads", threads] if threads else [])).stdout)
    state = torch.load(run / "latest.pt", weights_only=True)
    model = state["model_config"]
    result = {"corpus": args.corpus, **({"held_out": str(args.held_out)} if args.held_out else {}),
              "minutes": None if args.steps else args.minutes,
              **({"planned_as": f"{args.planned_as}, {args.minutes:g} minutes"} if args.planned_as else {}),
              "seconds": round(state["elapsed_seconds"]), "options": " ".join(train_options) or "(defaults)",
              "model": f"{model['layers']}x{model['hidden']} {model['cell']}, dropout {model['dropout']:g}, "
                       f"weight drop {model.get('weight_drop', 0):g}{_members(model)}",
              "steps": state["step"], "held_out_bits_per_char": round(report["bits_per_char"], 4),
              "own_validation_bits_per_char": round(bits(min(v for _, v, _ in state["history"]["val"])), 4),
              "cpu": cpu_name(), "gemm_fp32_gflops": round((gemm_before + gemm_gflops()) / 2),
              "date": time.strftime("%Y-%m-%d"), "work": str(work),
              "summary": trained.stderr.strip().splitlines()[-1]}
    print(json.dumps(result))


def _members(model: dict) -> str:
    return f", {model['members']} members" if model.get("members", 1) > 1 else ""


if __name__ == "__main__":
    main()
