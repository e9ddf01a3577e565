"""Watch runs live: ``trainer.tensorboard=true`` writes TensorBoard event files into the run folder.

Scalars, at the rows the run writes anyway (metrics.csv, sparsity.csv), never per training step:

    <split>/<metric>          every metrics.csv row: train/loss, train/lr, train/sparsity (the
                              schedule's target), and every evaluation metric (valid/perplexity, ...)
    sparsity/target           at each mask update: the target over all pruned tensors
    sparsity/achieved         at each mask update: 1 - their NNZ / their size
    sparsity_layer/<tensor>   at each mask update: each pruned tensor's achieved sparsity

so ``tensorboard --logdir results/runs`` shows every run of every sweep (named EXP/RUN_ID).

Each row is flushed to the event file as it is written, as metrics.csv is appended: a live view
is never staler than the last row, and a run killed with -9 has lost no point before its kill.
A resumed run appends a new event file that starts with ``purge_step`` = its checkpoint's step
+ 1: TensorBoard then drops the points the killed run wrote after its checkpoint, which the
resumed run writes again (metrics.csv is cut back to the checkpoint the same way, results.py).
"""


class TensorBoardLog:
    def __init__(self, path, purge_step: int = None):
        # Imported here: only runs that ask for TensorBoard pay for its import.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(path), purge_step=purge_step)

    def metrics(self, step: int, split: str, row: dict) -> None:
        for key, value in row.items():
            self.writer.add_scalar(f"{split}/{key}", float(value), step)
        self.writer.flush()

    def sparsity(self, step: int, stats) -> None:
        numel = sum(s.numel for s in stats)
        if not numel:
            return
        self.writer.add_scalar("sparsity/target", sum(s.target_sparsity * s.numel for s in stats) / numel, step)
        self.writer.add_scalar("sparsity/achieved", 1.0 - sum(s.nnz for s in stats) / numel, step)
        for s in stats:
            self.writer.add_scalar(f"sparsity_layer/{s.name}", s.sparsity, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def attach(folder, trainer_cfg, resume_step: int = None) -> None:
    """Add a TensorBoard log to ``folder``'s watchers when the run asks for one (rank 0 only)."""
    if trainer_cfg.get("tensorboard", False) and folder.writes:
        folder.watchers.append(TensorBoardLog(folder.path, None if resume_step is None else resume_step + 1))
