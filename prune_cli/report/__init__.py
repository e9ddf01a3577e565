"""The report: collect run folders -> one DataFrame -> tables, figures and one page.

    prune-report [--results-dir results] [--out results/report] [--run EXP/RUN_ID]
"""
from .cli import main, make_report

__all__ = ["main", "make_report"]
