"""What an ensemble of trained runs would score on a held-out file: the mean of the members' probabilities of each
next character, against each member alone.

    python bench/ensemble.py HELD_OUT.txt RUN_A RUN_B [RUN_C ...]
    python bench/ensemble.py WORK/held_out.txt W0/run W1/run W2/run W3/run   # bench/quality.py's work folders
    python bench/ensemble.py HELD_OUT.txt RUN_A RUN_B --dynamic     # each member adapting as `charrnn eval --dynamic`

Prints one JSON line: each member's bits/char, their mean, and for each ensemble size k from 2 to the number of
runs, the mean over every subset of k runs (so a size is not judged by one lucky pair). The runs must share an
alphabet (the same training text, other seeds or settings). With --dynamic each member adapts on its own, with
`charrnn eval --dynamic`'s default settings, and the ensemble mixes their adapted predictions. Scored in fp32 on
one thread; the numbers depend on the models and the text, not on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402

import charrnn  # noqa: E402
from charrnn.config import EvalConfig, bits  # noqa: E402
from charrnn.evaluate import dynamic_losses_per_char, losses_per_char  # noqa: E402


def mixture_losses(member_losses: list[torch.Tensor]) -> torch.Tensor:
    """Per-character loss in nats of the mixture that gives each member equal weight: -log(mean of exp(-loss))."""
    stacked = torch.stack(member_losses).double()
    return -(torch.logsumexp(-stacked, 0) - math.log(len(member_losses)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("held_out", help="the text to score")
    parser.add_argument("runs", nargs="+", help="two or more runs (a run directory or a .pt file)")
    parser.add_argument("--dynamic", action="store_true", help="score each member with dynamic evaluation")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("an ensemble needs two runs or more")
    torch.set_num_threads(1)
    text = open(args.held_out, encoding="utf-8").read()
    models = [charrnn.load(run, device="cpu") for run in args.runs]
    if any(m.vocab.to_list() != models[0].vocab.to_list() for m in models):
        parser.error("the runs have different alphabets: train them on the same text")
    ids = torch.tensor(models[0].vocab.encode(text, drop_unknown=True))
    if args.dynamic:
        losses = [dynamic_losses_per_char(m.network, ids, config=EvalConfig(dynamic=True)).double() for m in models]
    else:
        losses = [losses_per_char(m.network, ids).double() for m in models]
    members = [bits(float(loss.mean())) for loss in losses]
    sizes = {k: sum(bits(float(mixture_losses([losses[i] for i in subset]).mean()))
                    for subset in itertools.combinations(range(len(losses)), k)) / math.comb(len(losses), k)
             for k in range(2, len(losses) + 1)}
    print(json.dumps({"held_out": args.held_out, "dynamic": args.dynamic, "characters": len(ids) - 1,
                      "members_bits_per_char": [round(b, 4) for b in members],
                      "mean_member": round(sum(members) / len(members), 4),
                      "ensemble_bits_per_char": {str(k): round(b, 4) for k, b in sizes.items()}}))


if __name__ == "__main__":
    main()
