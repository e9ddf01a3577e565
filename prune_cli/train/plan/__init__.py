"""What a run is: its Plan (plan.py), decided before a byte is written, from its start (start.py),
recipe and schedules (recipe.py), costs (costs.py) and budget (budget.py)."""
