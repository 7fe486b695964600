"""Where bf16 autocast trains faster than fp32 on this machine: the table behind `--precision auto`'s rule.

    python bench/precision.py                 # the grid below, about 6 minutes on a 2-core CPU
    python bench/precision.py --quick         # fewer repeats
    python bench/precision.py --device cuda   # on a GPU, which has its own rule

For each cell, width and batch it times one training step (forward, backward) of charrnn's own model at
sequence length 64, in fp32 and in bf16 autocast, alternating the two so that neither gets the machine's warm-up
or a passing load alone, and prints fp32 time / bf16 time (above 1: bf16 is faster). `charrnn.devices`
keeps the rule read off this table; re-run it on a new kind of CPU and compare before changing the rule.
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
from machine import device_name, gemm_summary, synchronize  # noqa: E402  (bench/machine.py)

from charrnn.config import Cell, ModelConfig, Precision  # noqa: E402
from charrnn.devices import autocast, bf16_fault, bf16_runs, choose_bf16, has_native_bf16  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.training import default_embedding  # noqa: E402

VOCAB = 103
SEQ_LEN = 64
GRID = {  # cell: (hidden sizes, batch sizes)
    Cell.LSTM: ((256, 512, 768, 1024, 1536), (16, 32, 64, 128)),
    Cell.GRU: ((256, 512, 1024), (16, 32, 128)),
}
GPU_GRID = {
    Cell.LSTM: ((256, 512, 1024, 2048), (32, 128, 512)),
    Cell.GRU: ((512, 1024), (32, 128)),
}


def grid_model(cell: Cell, hidden: int) -> ModelConfig:
    # embedded as train embeds it: an odd width would time oneDNN's slow bf16 path (bench/RESULTS.md, session 32)
    return ModelConfig(vocab_size=VOCAB, cell=cell, hidden=hidden, embedding=default_embedding(VOCAB))


def speedup(cell: Cell, hidden: int, batch: int, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    torch.manual_seed(0)
    model = CharRNN(grid_model(cell, hidden)).to(device)
    ids = torch.randint(0, VOCAB, (batch, SEQ_LEN), device=device)

    def step(bf16: bool) -> float:
        synchronize(device)
        start = time.perf_counter()
        with autocast(device, bf16):
            logits, _ = model(ids)
        logits.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)
        synchronize(device)
        return time.perf_counter() - start

    step(False), step(True)  # oneDNN builds its kernels for the shape; memory is touched
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    return statistics.median(times[False]) / statistics.median(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed repeats instead of 7")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 there as train runs it: TF32 in cuDNN)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    device = torch.device(args.device)
    print(f"machine: {device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"native bf16: {has_native_bf16(device)}")
    print(gemm_summary(device))
    if not has_native_bf16(device):
        print(f"this {device.type} has no native bf16 (AVX512-BF16 or AMX on a CPU): `--precision auto` trains in fp32 "
              "here and the shape rule does not apply; run this where bf16 is native")
        return
    print(f"training step (forward + backward), seq_len {SEQ_LEN}, vocabulary {VOCAB}: fp32 time / bf16 time; "
          "* where `auto` picks bf16, ! where bf16's gradients are wrong here (auto: fp32)")
    disagreements = 0
    for cell, (hiddens, batches) in (GPU_GRID if device.type == "cuda" else GRID).items():
        print(f"\n{cell.value:>6} " + "".join(f"{'batch ' + str(b):>12}" for b in batches))
        for hidden in hiddens:
            cells = []
            for batch in batches:
                if not bf16_runs(device.type, cell):
                    cells.append(f"{'cannot run':>11} ")
                    continue
                ratio = speedup(cell, hidden, batch, repeats, device)
                if bf16_fault(device, grid_model(cell, hidden)):  # auto keeps fp32 here whatever the speed
                    cells.append(f"{ratio:>10.2f}! ")
                    continue
                rule = choose_bf16(Precision.AUTO, device, grid_model(cell, hidden), batch_size=batch)[0]
                disagreements += (ratio > 1.0) != rule
                cells.append(f"{ratio:>10.2f}{'*' if rule else ' '} ")
            print(f"{hidden:>6} " + "".join(cells), flush=True)
    print(f"\nthe rule disagrees with this run's faster choice in {disagreements} cell(s)")


if __name__ == "__main__":
    main()
