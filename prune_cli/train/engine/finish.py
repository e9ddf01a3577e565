"""The end of a run: the final evaluation and summary.json, or the record of a run that diverged."""
import math

from prune_cli.pruning.compute import masked_nnz
from prune_cli.train.engine.callbacks import DivergedError
from prune_cli.train.folder import summary


def finish(cfg, folder, model, data, task, pruner, loop, plan, parallel, meta_keys, macs_at, say) -> None:
    """The final evaluation of every split asked for, then summary.json (its presence: finished)."""
    final = {}
    for split in list(cfg.trainer.eval_splits) if cfg.trainer.eval_splits else list(data.eval_splits):
        final[split] = task.evaluate(model.eval(), data.eval_splits[split](), final=True)
        folder.log_metrics(loop.step, loop.step / data.steps_per_epoch, split,
                           {**final[split], **(macs_at(loop.step) if macs_at else {})})
        say(f"final {split} " + " ".join(f"{k} {v:.4g}" for k, v in final[split].items()))
    record = summary.base_record(cfg, folder.path.name, model, data, pruner, loop, parallel.device, meta_keys)
    record.update(task.summary_fields(final, data.meta))
    record.update(world_size=parallel.world_size, precision=cfg.trainer.get("precision", "fp32"),
                  compile=bool(cfg.trainer.get("compile", False)))
    record.update(plan.summary_fields(loop.step, masked_nnz(pruner.masks), folder.read_updates(), loop.first_step))
    folder.write_summary(record)
    say(f"finished {folder.path} in {loop.elapsed:.1f} s")
    parallel.barrier()  # the other ranks end once rank 0 has written summary.json


def record_divergence(cfg, folder, model, data, pruner, loop, plan, parallel, error: DivergedError) -> None:
    """summary.json of a diverged run: what it was, where it diverged (its steps), its last finite
    metrics (``last_metrics``: split -> metrics of its last evaluation and train row before the
    step; its quality fields stay empty). Its presence stops the same command from training it again."""
    loop.step = error.step
    record = summary.base_record(cfg, folder.path.name, model, data, pruner, loop, parallel.device)
    record.update(status="diverged", diverged_step=error.step,
                  diverged_loss=error.loss if math.isfinite(error.loss) else None, diverged_reason=str(error),
                  last_metrics=folder.read_last_metrics(before=error.step), **plan.start.summary())
    folder.write_summary(record)
