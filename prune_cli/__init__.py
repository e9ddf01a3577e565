"""prune-cli: large-sparse vs small-dense, after Zhu & Gupta (2017)."""

__version__ = "0.1.0"
