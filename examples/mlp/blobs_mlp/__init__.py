"""An example of a user's own model and dataset for prune-cli, defined outside the package."""
