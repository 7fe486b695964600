#!/usr/bin/env bash
# The GPU checks (bench/RESULTS.md, "GPU"): every CUDA path charrnn has, end to end, and its speeds, in one run
# of about 6 minutes on one GPU. Each check has its own time limit and prints its wall time and exit status, so a
# failing one does not hide the rest.
#
#   bash bench/gpu.sh TINYSHAKESPEARE.txt [WORK_DIR]
#
# Needs a CUDA GPU and a python3 (or $PYTHON) with torch, typer, rich and tqdm; charrnn runs from this checkout.
set -u
corpus=${1:?usage: bash bench/gpu.sh TINYSHAKESPEARE.txt [WORK_DIR]}
work=${2:-/tmp/charrnn-gpu}
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
mkdir -p "$work"

timed() {  # LIMIT_SECONDS COMMAND...: run it, then print its wall time and exit status
    local limit=$1 start=$SECONDS rc
    shift
    echo "\$ $*"
    timeout "$limit" "$@"
    rc=$?
    echo "(wall $((SECONDS - start)) s, rc $rc)"
}
section() { printf '\n=== %s\n' "$*"; }
charrnn=("$py" -m charrnn)

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
lscpu | grep 'Model name'

section "the issue's split: the first 90% of the text trains, the last 10% is held out"
"$py" - "$corpus" "$work" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from quality import split_held_out  # bench/quality.py's split, so both score the same held-out text
for path in split_held_out(Path(sys.argv[1]).read_text(encoding="utf-8"), Path(sys.argv[2])):
    print(f"{path.name}: {len(path.read_text(encoding='utf-8')):,} characters")
EOF

section "bf16 gradients against fp32 per layer shape (charrnn.devices.bf16_gradients_sound: auto and the plan trust bf16 only where True)"
timed 60 "$py" -c "
from charrnn.config import Cell
from charrnn.devices import bf16_gradients_sound
for cell in Cell:
    print(cell.value, {(width, hidden): bf16_gradients_sound('cuda', cell, width, hidden)
                       for hidden in (256, 1024, 2048) for width in (114, 114 + hidden)})"

section "training-step time by width, batch and window, fp32 (TF32 in cuDNN: what train's auto picks below 2x1024 at batch 128)"
timed 120 "$py" bench/step_time.py 2x256 2x512 2x768 2x1024 2x1536 2x2048 2x512b128 2x1024b128 2x2048b128 \
    2x512s32 2x512s128 2x512b128s32 gru2x512 gru2x1024 --device cuda --rounds 5
section "the same with weight drop 0.2 (a dropped copy of W_hh per layer per step, outside cuDNN's flat buffer)"
timed 90 "$py" bench/step_time.py 2x256 2x512 2x1024 2x2048 --device cuda --weight-drop 0.2 --rounds 5
section "bf16 against fp32: bare steps in one process (auto's GPU rule), then whole training loops taking turns"
timed 90 "$py" bench/precision.py --device cuda
timed 150 "$py" bench/loop_speed.py "$work/train.txt" --device cuda --shapes 2x384 2x768 2x1024 2x1024b128 2x2048 \
    --steps 400 --precision fp32 bf16

section "train for 2 minutes on the GPU with the defaults (the plan for the cuda class)"
timed 200 "${charrnn[@]}" train "$work/train.txt" --minutes 2 --device cuda --out "$work/ts" --force
section "held-out score on the GPU, the same checkpoint on the CPU, and dynamic evaluation on the GPU"
timed 60 "${charrnn[@]}" eval "$work/held_out.txt" -c "$work/ts" --json --device cuda --quiet
timed 90 "${charrnn[@]}" eval "$work/held_out.txt" -c "$work/ts" --json --device cpu --quiet
timed 150 "${charrnn[@]}" eval "$work/held_out.txt" -c "$work/ts" --json --device cuda --dynamic --quiet
timed 60 "${charrnn[@]}" eval "$work/held_out.txt" -c "$work/ts" --json --device cuda --dynamic --dynamic-lr 3e-4 --quiet
section "sample into a pipe that closes early"
timed 60 bash -c "'$py' -m charrnn sample -c '$work/ts' --seed 'ROMEO:' --length 5000 --device cuda | head -c 300; s=(\${PIPESTATUS[*]}); echo; echo \"pipe status \${s[*]}\""

section "same seed, same run on the GPU: two 100-step runs, weights compared bit for bit"
for n in 1 2; do
    timed 90 "${charrnn[@]}" train "$work/train.txt" --steps 100 --random-seed 1 --device cuda --quiet --out "$work/seed$n" --force
done
"$py" - "$work" <<'EOF'
import sys, torch
a, b = (torch.load(f"{sys.argv[1]}/seed{n}/latest.pt", map_location="cpu", weights_only=False) for n in (1, 2))
keys = a["model"].keys()
same = all(torch.equal(a["model"][k], b["model"][k]) for k in keys)
worst = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in keys)
print(f"weights bit-identical: {same} (largest difference {worst:.3g})")
EOF

section "torchrun with one process (NCCL)"
timed 120 "$py" -m torch.distributed.run --standalone --nproc_per_node 1 -m charrnn train "$work/train.txt" \
    --steps 100 --device cuda --quiet --out "$work/ddp" --force
