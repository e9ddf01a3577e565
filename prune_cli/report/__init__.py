"""The report: collect run folders -> one DataFrame -> tables, figures and one page.

    prune-report [--results-dir results] [--out results/report] [--run EXP/RUN_ID]

``main`` and ``make_report`` are loaded on first use: prune-run imports this package for the
sweep's closing table (report/study.py), and must not pay for pandas and matplotlib (~1.3 s)
at every start, a refused config included.
"""
__all__ = ["main", "make_report"]


def __getattr__(name):
    if name in __all__:
        from . import cli
        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
