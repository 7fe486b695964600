"""An ensemble's members stepped side by side on the CPU: each of a few threads steps its share of the members.

A small member's training step is a chain of small products that one thread runs nearly as fast as two (on a Xeon
with AMX, 16 members of 2x128 trained in 117 s at two threads and 116 s at one: bench/QUALITY.md, session 51), so
members stepped one after another leave the other cores partly idle (on a Zen 4 at two threads, lanes stepped 8
members of 2x64 to 2x256 1.14 to 1.27 times faster, and kept their pace beside other work where members in turn did
not: bench/RESULTS.md, session 52). Here each of `lanes` threads, at one CPU thread apiece
(torch's thread count is a thread's own), takes members lane, lane + lanes, ... in turn: forward, loss, backward and
gradient clipping; the caller's thread then takes the optimiser step for all of them. What a member computes does
not depend on the threads' timing: its dropout comes from its own stream (Ensemble.seed_members), its gradients
touch only its own weights, and the losses come back in member order (tests/test_lanes.py). Dynamic evaluation
(charrnn.evaluate) runs an ensemble's adapting networks on the same lanes through `Lanes.map`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor, nn

from charrnn.devices import autocast
from charrnn.model import Ensemble, Network, State, member_losses, member_states, members

T, R = TypeVar("T"), TypeVar("R")


def lane_count(device: torch.device, members: int, threads: int, distributed: bool) -> int:
    """Threads to step `members` networks on: one per CPU thread, at most one per member; 1 (stepped in turn, as one
    network is) on a GPU, which queues one member's kernels while it runs another's, and under torchrun, whose
    gradient hooks expect one backward a step."""
    if device.type != "cpu" or distributed:
        return 1
    return max(1, min(members, threads))


def step_in_turn(network: nn.Module, model: Network, x: Tensor, y: Tensor, state: State | None, *, bf16: bool,
                 grad_clip: float) -> tuple[Tensor, State]:
    """What `Lanes.step` computes, with every member stepped on this thread in turn through `network` (the model, or
    DDP around it under torchrun): the sum of the members' mean losses (nats) and the new state, gradients in .grad,
    each member's clipped to `grad_clip` (0: not) as if it trained alone."""
    with autocast(x.device, bf16):
        logits, state = network(x, state, per_member=True)  # (members, B, T, V)
    loss = member_losses(logits, y)
    loss.backward()
    if grad_clip:
        for member in members(model):
            torch.nn.utils.clip_grad_norm_(member.parameters(), grad_clip)
    return loss, state


class Lanes:
    """A pool of `lanes` threads that share `threads` CPU threads (one each at two threads: a small member's products
    gain little from a second); `step` trains an ensemble's members on them, `map` runs any independent work. One
    lane is the caller's own thread."""

    def __init__(self, lanes: int, threads: int):
        self.lanes = lanes
        self._pool = ThreadPoolExecutor(lanes, thread_name_prefix="charrnn-lane",
                                        initializer=torch.set_num_threads,
                                        initargs=(max(1, threads // lanes),)) if lanes > 1 else None

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """[work(item) for item in items], side by side on the lanes; any lane may take any item, so what an item
        computes must not depend on which (nor on the others'). Re-raises an item's error here."""
        if self._pool is None:
            return [work(item) for item in items]
        return list(self._pool.map(work, items))

    def step(self, model: Ensemble, x: Tensor, y: Tensor, state: State | None, *, bf16: bool,
             grad_clip: float) -> tuple[Tensor, State]:
        """`step_in_turn`'s step, bit for bit, with the members side by side: forward and backward for every member
        on ids `x` and targets `y` (B, T) from `state`; the sum of the members' mean losses and the new state."""
        states = member_states(state, model.config) if state is not None else [None] * len(model.members)
        done: list[tuple[Tensor, State] | None] = [None] * len(model.members)

        def lane(first: int) -> None:
            for k in range(first, len(model.members), self.lanes):
                member = model.members[k]
                with autocast(x.device, bf16):  # autocast is per thread: entered here, not by the caller
                    logits, new_state = member(x, states[k], per_member=True)  # (1, B, T, V)
                loss = member_losses(logits, y)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(member.parameters(), grad_clip)
                done[k] = loss.detach(), new_state

        self.map(lane, range(self.lanes))
        return sum(loss for loss, _ in done), [layer for _, s in done for layer in s]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # after an error or Ctrl-C: no queued work runs

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
