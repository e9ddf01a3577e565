"""Progress: tqdm's bar on a terminal, a plain line every 5% anywhere else (a log file, CI, SLURM)."""
import io
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tqdm import tqdm

from prune_cli.train.folder import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(total, initial, steps, postfix=None):
    out = io.StringIO()
    bar = progress.bar(total, initial, True, desc="mlp", stream=out)
    for _ in range(steps):
        bar.update(1)
        if postfix:
            bar.set_postfix(postfix, refresh=False)
    bar.close()
    return out.getvalue().splitlines()


def steps_of(lines):
    return [int(re.match(r"mlp: step (\d+)/", line).group(1)) for line in lines]


def test_a_redirected_run_prints_one_line_every_5_percent():
    lines = run(200, 0, 200, {"loss": "2.31", "sparsity": "0.5"})
    assert steps_of(lines) == list(range(10, 201, 10))
    assert re.fullmatch(r"mlp: step 10/200 \(5%\) [0-9.e+]+ steps/s train loss 2.31 sparsity 0.5", lines[0]), lines[0]
    assert lines[-1].startswith("mlp: step 200/200 (100%) ")
    assert "\r" not in "".join(lines)


def test_the_train_row_is_shown_only_when_it_is_new():
    out = io.StringIO()
    bar = progress.bar(100, 0, True, desc="mlp", stream=out)
    for step in range(1, 31):
        bar.update(1)
        if step == 3:  # one metrics row, then none for two lines
            bar.set_postfix({"loss": "6.72", "perplexity": "829"}, refresh=False)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("steps/s train loss 6.72 perplexity 829")
    assert all(line.endswith("steps/s") for line in lines[1:]), lines


def test_a_resumed_run_continues_on_the_same_grid_and_the_end_is_always_shown():
    assert steps_of(run(200, 37, 163)) == list(range(40, 201, 10))
    assert steps_of(run(200, 0, 15)) == [10, 15]  # stopped early (max_steps): close() shows where
    assert steps_of(run(7, 0, 7)) == list(range(1, 8))  # fewer steps than lines: one a step


def test_a_terminal_gets_tqdm_and_progress_false_gets_nothing():
    assert isinstance(progress.bar(10, 0, True, "mlp", stream=Terminal()), tqdm)
    assert isinstance(progress.bar(10, 0, True, "mlp", stream=io.StringIO()), progress.PlainProgress)
    out = io.StringIO()
    bar = progress.bar(10, 0, False, "mlp", stream=out)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("stream", [object(), io.StringIO()])
def test_streams_without_a_terminal_are_not_terminals(stream):
    if isinstance(stream, io.StringIO):
        stream.close()
    assert progress._is_terminal(stream) is False


@given(total=st.integers(1, 3000), initial_fraction=st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_the_lines_fall_on_one_grid_whatever_the_start(total, initial_fraction):
    """From any start (a resumed run), a line at every multiple of ceil(5% of the run) past the
    start, and one at the end: about 20 lines a run, never one per step on long runs."""
    initial = int(initial_fraction * total)
    shown = steps_of(run(total, initial, total - initial))
    interval = math.ceil(total * progress.EVERY)
    want = [s for s in range(interval, total + 1, interval) if s > initial]
    if initial < total and (not want or want[-1] != total):
        want.append(total)
    assert shown == want and len(shown) <= 21
