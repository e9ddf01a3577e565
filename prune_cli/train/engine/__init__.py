"""Running a run: the one loop (loop.py) and its callbacks (callbacks.py), the tasks (tasks.py,
bleu.py), optimizers and learning rates (optim.py), precision (precision.py) and ranks and the
device (distributed.py)."""
