"""Installed as ``hydra_plugins.prune_cli_sweeper`` (pyproject's package-dir): Hydra finds a
sweeper only inside the ``hydra_plugins`` namespace. Import it under that name, not this one."""
