"""Settings for the whole test session.

One torch thread in every test process and in the prune-run processes the tests start (they
inherit OMP_NUM_THREADS), unless the caller chose a number: the tests train models of a few
thousand weights, where a second OpenMP thread costs more in synchronisation than it computes.
Set here, before any test module imports torch. `OMP_NUM_THREADS=2 make test` runs them on two.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
