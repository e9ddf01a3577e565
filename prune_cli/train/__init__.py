"""Training, in three groups (subpackages, so that the floors show: a group imports only the
groups below it, and run.py alone sees all three):

    plan/    what a run is, decided before a byte is written: the start, the recipe and its
             length, the pruning schedule, the costs and the budget, as one frozen Plan
    engine/  running it: the loop (the step) and its callbacks, tasks, optimizer and learning
             rate, precision, ranks and the device
    folder/  the run folder: its files, checkpoints, summary, lock, stop signals, TensorBoard,
             progress and logs

run.py holds the context (lock, stop, ranks), the exception -> exit status table, and the
steps plan -> build -> resume -> fit -> finish.
"""
