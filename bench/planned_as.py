"""`charrnn train` with the settings another machine's plan would pick: its clock budget, run for fixed steps here.

    python bench/planned_as.py cpu-bf16 60 -- train.txt --steps 33750 --device cuda --precision fp32
    python bench/planned_as.py cpu-bf16 60 -- train.txt --steps 15900 --device cuda --precision fp32 --hidden 768
    python bench/quality.py python --steps 33750 --planned-as cpu-bf16 --minutes 60 -- --device cuda  # the same, held out

The arguments after `--` go to `charrnn train` as they are; only charrnn.plan changes: it plans as the device class
CLASS (cpu, cpu-bf16, cpu-amx, mps, cuda) at --plan-threads threads (default: the 2 its CPU figures were measured at)
would for a budget of MINUTES, and any option given still wins. A --steps run computes the same on any machine (same
seed, same run), so a GPU can run what a CPU's hour would, in its steps (or a faster day's: the steps times the
speed ratio) and in minutes. bench/RESULTS.md, session 39: an hour of `python` on a Zen 5's fast day, so emulated.
The arithmetic is the device's own (fp32 on a GPU, where the CPU may run bf16): compare such runs with each other.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from charrnn import plan  # noqa: E402
from charrnn.cli import main  # noqa: E402


def plan_as(device_class: str, minutes: float, threads: int = plan.MEASURED_THREADS) -> None:
    """From now on in this process, charrnn.plan plans as `device_class` at `threads` threads for `minutes`."""
    nominal_flops, planned = plan.nominal_flops, plan.plan

    def as_class(*args, **kwargs) -> str:
        return device_class

    def nominal(_class: str, *, processes: int = 1, **_) -> float:  # this machine's own thread count is not planned for
        return nominal_flops(device_class, threads=threads, processes=processes)

    def for_minutes(**kwargs) -> plan.Plan:  # a CPU class steps members on its threads (charrnn.lanes), a GPU in turn
        lanes = 1 if device_class in plan.NOMINAL_FLOPS else threads
        return planned(**{**kwargs, "budget": plan.Budget(minutes=minutes), "lanes": lanes})

    plan.device_class, plan.nominal_flops, plan.plan = as_class, nominal, for_minutes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device_class", choices=sorted({*plan.CPU_FLOPS_PER_THREAD, *plan.NOMINAL_FLOPS}))
    parser.add_argument("minutes", type=float)
    parser.add_argument("--plan-threads", type=int, default=plan.MEASURED_THREADS, help="the CPU threads planned for")
    args, train_args = parser.parse_known_args()
    plan_as(args.device_class, args.minutes, args.plan_threads)
    sys.argv = ["charrnn", "train", *(a for a in train_args if a != "--")]
    main()
