"""With keep_freed_memory, a training step's large buffers are reused instead of page-faulted afresh (glibc)."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, warnings
warnings.filterwarnings("ignore")
import torch
from charrnn.cpu import allocator
if sys.argv[1] == "tuned":
    assert allocator.keep_freed_memory()

def step():  # a step's worth of large buffers (48 MiB is above glibc's largest mmap threshold), then freed
    buffers = [torch.empty(12 * 1024 * 1024).fill_(1), torch.empty(4 * 1024 * 1024).fill_(1)]
    del buffers

for _ in range(3):
    step()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))  # the steady state; an occasional step still faults part of a buffer in
"""


def faults_per_step(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_large_buffers_are_reused_from_step_to_step_without_page_faults():
    default, tuned = faults_per_step("default"), faults_per_step("tuned")
    assert default > 10_000  # the 48 MiB buffer's 12,288 pages, mapped and faulted in afresh every step
    assert tuned < 1_000  # a training step: 190,000 faults vs 4,700


def test_the_environment_can_leave_malloc_alone():
    probe = "import os, sys; from charrnn.cpu import allocator; sys.exit(allocator.keep_freed_memory())"
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "CHARRNN_KEEP_FREED_MEMORY": "0"})
    assert done.returncode == 0  # False: nothing was changed
