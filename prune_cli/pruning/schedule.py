"""Sparsity schedules: the target sparsity at each training step.

A schedule answers two questions: is ``step`` a mask-update step, and what sparsity do the
masks hold from that step on. Masks change only at update steps; in between, the sparsity
is that of the last update.
"""
import math
from typing import List


def _check_sparsity(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise ValueError(f"{name}={value} is outside [0, 1): use a fraction such as 0.9 for 90% sparse")
    return value


def _check_step(name: str, value: int) -> int:
    if int(value) != value or value < 0:
        raise ValueError(f"{name}={value} must be a non-negative integer step")
    return int(value)


class GradualSchedule:
    """Eq. 1 of Zhu & Gupta (2017):

        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3,   t in {t0, t0 + dt, ..., t0 + n*dt}

    with t0 = begin_step, n * dt = end_step - begin_step and dt = frequency. Before t0 the
    model is dense (0); after the last update it stays at s_f. ``begin_step == end_step``
    is a single update to s_f at t0.
    """

    def __init__(self, final_sparsity, initial_sparsity=0.0, begin_step=0, end_step=None, frequency=None):
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity={self.initial_sparsity} > final_sparsity={self.final_sparsity}: "
                "sparsity may only grow (pruned weights never come back)")
        if end_step is None or frequency is None:
            raise ValueError("GradualSchedule needs end_step and frequency (steps between mask updates)")
        self.begin_step = _check_step("begin_step", begin_step)
        self.end_step = _check_step("end_step", end_step)
        if int(frequency) != frequency or frequency <= 0:
            raise ValueError(f"frequency={frequency} must be a positive integer number of steps")
        self.frequency = int(frequency)
        if self.begin_step > self.end_step:
            raise ValueError(f"begin_step={self.begin_step} > end_step={self.end_step}: pruning must begin before it ends")
        span = self.end_step - self.begin_step
        if span % self.frequency:
            raise ValueError(
                f"end_step - begin_step = {span} is not a multiple of frequency={self.frequency}: "
                "eq. 1 updates at begin_step + k*frequency and must land on end_step")
        self.n = span // self.frequency

    def update_steps(self) -> List[int]:
        return list(range(self.begin_step, self.end_step + 1, self.frequency))

    def is_update_step(self, step: int) -> bool:
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0

    def level(self, update_step: int) -> float:
        if self.n == 0:
            return self.final_sparsity
        progress = (update_step - self.begin_step) / (self.n * self.frequency)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3

    def sparsity_at(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        last = min(step, self.end_step)
        last -= (last - self.begin_step) % self.frequency
        return self.level(last)

    def __repr__(self):
        return (f"GradualSchedule(final_sparsity={self.final_sparsity}, initial_sparsity={self.initial_sparsity}, "
                f"begin_step={self.begin_step}, end_step={self.end_step}, frequency={self.frequency})")


class OneShotSchedule(GradualSchedule):
    """Dense until ``step``, then ``sparsity`` at once and for good."""

    def __init__(self, sparsity, step=0):
        super().__init__(sparsity, sparsity, begin_step=step, end_step=step, frequency=1)

    def __repr__(self):
        return f"OneShotSchedule(sparsity={self.final_sparsity}, step={self.begin_step})"


class ConstantSchedule(OneShotSchedule):
    """``sparsity`` from the first step on (a sparse model trained at a fixed sparsity)."""

    def __init__(self, sparsity):
        super().__init__(sparsity, step=0)

    def __repr__(self):
        return f"ConstantSchedule(sparsity={self.final_sparsity})"
