"""SIGTERM and SIGINT save and leave: the run finishes the step it is in, writes its checkpoint
and exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT, as a shell reports a
process killed by it), so the same command resumes it with the numbers of an uninterrupted run.

A cluster's first signal is SIGTERM (scancel, preemption, a requeue, torchrun passing its own
on), and Ctrl-C is SIGINT: either would otherwise kill the run mid-step and lose up to
``trainer.checkpoint_every`` steps. The handler only records the signal; the training loop looks
at it after every step (an attribute read on one process). Under torchrun the ranks must stop at
the same step, or one would wait forever for the others at the next collective: there they agree
every step, with one small all-reduce over the CPU (``Parallel.agree``). Submitit's USR2 (its
requeue) is not touched: submitit handles it and the requeued job resumes from the checkpoint.

The handlers are installed explicitly for the run's duration and the previous ones restored after:
a process started in the background by a non-interactive shell inherits SIGINT as ignored, and
Hydra's basic launcher runs a sweep's jobs one after another in one process.
"""
import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """The run saved its checkpoint at ``step`` and leaves because of signal ``signum``."""

    def __init__(self, signum: int, step: int, total: int):
        self.signum, self.status = signum, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} of {total}; its checkpoint "
                         "is saved and the same command resumes it")


class StopSignals:
    """The first SIGTERM or SIGINT this process received during the run (0: none)."""

    def __init__(self):
        self.signum = 0

    def _record(self, signum, frame) -> None:
        self.signum = self.signum or signum

    def agreed(self, parallel) -> int:
        """The signal every rank stops for (the largest any rank got), 0 to go on."""
        return parallel.agree(self.signum) if parallel.enabled else self.signum


@contextmanager
def stop_signals():
    """Record SIGTERM and SIGINT in the block instead of dying of them."""
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield stop
        return
    previous = {s: signal.signal(s, stop._record) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
