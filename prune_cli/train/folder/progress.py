"""Training progress on stderr: tqdm's bar on a terminal, plain lines everywhere else.

A bar redraws itself with carriage returns: fine on a terminal, thousands of redraws on a few
lines in a redirected log (``make run > log``, CI, SLURM's output files). When stderr is not a
terminal, progress is one plain line every 5% of the run instead:

    ptb_lstm: step 120/2400 (5%) 14.2 steps/s train loss 5.12 perplexity 167 sparsity 0

(the train part only when a new metrics row came since the line before).
"""
import logging
import math
import sys
import time

EVERY = 0.05  # fraction of the run between two plain lines


def bar(total: int, initial: int, enabled: bool, desc: str, stream=None):
    """An object with tqdm's update(n), set_postfix(dict, refresh) and close(), for the loop."""
    stream = sys.stderr if stream is None else stream
    if enabled and not _is_terminal(stream):
        return PlainProgress(total, initial, desc, stream)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, desc=desc, unit="step",
                mininterval=1.0, file=stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """One line at every EVERY of ``total`` steps (and at the end): step, %, rate, and the last
    train row (named "train") only when a new one came since the previous line."""

    def __init__(self, total: int, initial: int, desc: str, stream, every: float = EVERY):
        self.total, self.n, self.desc, self.stream = total, initial, desc, stream
        self.interval = max(1, math.ceil(total * every))
        self.next = (initial // self.interval + 1) * self.interval
        self.postfix, self.fresh = {}, False
        self.first, self.started = initial, time.perf_counter()
        self.shown = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.next or self.n >= self.total:
            self._line()
            self.next = (self.n // self.interval + 1) * self.interval

    def set_postfix(self, values: dict, refresh: bool = False) -> None:
        self.postfix = dict(values)
        self.fresh = True

    def close(self) -> None:
        if self.n != self.shown:
            self._line()

    def _line(self) -> None:
        elapsed = time.perf_counter() - self.started
        rate = (self.n - self.first) / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.n / self.total if self.total else 100.0
        extra = " train" + "".join(f" {k} {v}" for k, v in self.postfix.items()) if self.fresh else ""
        self.fresh = False
        self.stream.write(f"{self.desc}: step {self.n}/{self.total} ({percent:.0f}%) {rate:.3g} steps/s{extra}\n")
        self.stream.flush()
        self.shown = self.n


class _TqdmHandler(logging.Handler):
    """Console lines that do not break the progress bar."""

    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(f"[{record.name}] {record.getMessage()}", file=sys.stderr)


class RunLog:
    """The run's log lines: into the folder's run.log and onto the console (rank 0 alone; the
    other ranks train silently beside it). ``quiet()`` leaves the console to the one line the
    command prints when a run stops early."""

    def __init__(self, folder, logger: logging.Logger):
        self.logger = logger
        self.file = logging.FileHandler(folder.log) if folder.writes else logging.NullHandler()
        self.file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self.console = _TqdmHandler() if folder.writes else logging.NullHandler()
        for handler in (self.file, self.console):
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    def __call__(self, message: str) -> None:
        self.logger.info(message)

    def quiet(self) -> None:
        self.logger.removeHandler(self.console)

    def close(self) -> None:
        for handler in (self.file, self.console):
            self.logger.removeHandler(handler)
        self.file.close()
