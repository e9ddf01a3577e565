"""A run's folder and its lifecycle: every file's name, writing and reading (files.py), checkpoints
with RNG and resume compatibility (checkpoint.py), the summary record (summary.py), the lock
(lock.py), stop signals (stop.py), TensorBoard (watch.py) and progress and logs (progress.py)."""
