"""Checks on a composed config, made before any work: one line saying what is wrong and what to do.

``validate`` runs every check, one named function each, and raises ConfigError for the first
problem; a Scratch-B run's partner (budget.match) is validated here as a run of its own.
"""
import os
import re
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from prune_cli import builders, models
from prune_cli.config import ConfigError, conf_dir, effective_sparsity, group_options
from prune_cli.pruning import CRITERIA, SCHEMES, parse_pattern, pattern_sparsity
from prune_cli.pruning.dynamic import check_dynamic
from prune_cli.train.engine.tasks import TASKS
from prune_cli.train.plan import budget
from prune_cli.train.plan.sources import StartError, check_source, kept_checkpoint


def _fraction(name, value, upper_open=True):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number: use a fraction in [0, 1), e.g. {name}=0.9")
    if not (0.0 <= value < 1.0):
        raise ConfigError(f"{name}={value} is outside [0, 1): use a fraction such as {name}=0.9 for 90% sparse")
    return value


def _yaml(group: str, name: str, dirs=None) -> dict:
    for folder in dirs or [conf_dir()]:
        path = Path(folder) / group / f"{name}.yaml"
        if path.is_file():
            try:
                return yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                return {}  # Hydra reports it, in its own words, when it composes
    return {}


def datasets_for(task: str, dirs=None):
    """The dataset configs (conf/data and the user's) that feed models of ``task``."""
    return [name for name in group_options("data", dirs) if _yaml("data", name, dirs).get("task") == task]


def check_family(model: str, model_task, data: str, data_task, dirs=None) -> None:
    """A model and a dataset of different families (gnmt on ptb, an LSTM LM on multi30k)."""
    if model_task is not None and data_task is not None and model_task != data_task:
        raise ConfigError(f"model {model} is a {model_task} model but data={data} is a {data_task} dataset; "
                          f"use data={'|'.join(datasets_for(model_task, dirs)) or 'a ' + model_task + ' dataset'}")


def _default_choice(defaults, group: str):
    """The choice a defaults list makes for ``group`` (``group: x`` or ``override /group: x``)."""
    for item in defaults or []:
        if isinstance(item, dict):
            for key, value in item.items():
                if key.split()[-1].lstrip("/") == group:
                    return value
    return None


def check_family_choices(args, dirs=None) -> None:
    """``check_family`` on the command line, before Hydra composes: a model's recipe is picked by
    its dataset (``optim: gnmt_${data}``), so gnmt on ptb would otherwise stop Hydra with "Could
    not find 'optim/gnmt_ptb'" instead of saying what is wrong. Only an explicit ``data=`` can
    disagree with the model (a model's and an experiment's own defaults agree with it)."""
    given = {}
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in ("model", "data", "experiment"):
            given[key] = [c for c in re.split(r",(?![^(]*\))", value) if c and not re.match(r"^\w+\(", c)]
    if not given.get("data"):
        return
    chosen = given.get("model") or [_default_choice(_yaml("experiment", e, dirs).get("defaults"), "model")
                                    for e in given.get("experiment", [])]
    chosen = [c for c in chosen if c] or [_default_choice(yaml.safe_load((conf_dir() / "config.yaml").read_text())
                                                          .get("defaults"), "model")]
    for model in chosen:
        spec = _yaml("model", model, dirs)
        model_task = (spec.get("model") if isinstance(spec.get("model"), dict) else spec).get("task")
        for data in given["data"]:
            check_family(model, model_task, data, _yaml("data", data, dirs).get("task"), dirs)


def _positive_int(name, value, what):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value} must be a positive integer ({what})")


def _writable_dir(path: str) -> None:
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"results_dir={path}: {probe} is a file, not a directory; choose another results_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results_dir={path} cannot be written ({probe} is not writable); choose another results_dir")


PRECISIONS = ("fp32", "bf16", "fp16")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar_text(value) -> bool:  # a name or a path; Hydra reads exp_name=2024 as an int
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


# key -> (check, what it must be, an example). Hydra gives a typed value for every override
# (seed=notanint is a str, seed=1.5 a float, seed=true a bool); a wrong type caught here is one
# line, instead of a traceback from deep inside the run.
TOP_KEYS = {
    "sparsity": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number in [0, 1)", "0.9"),
    "seed": (_is_int, "an integer", "0"),
    "device": (_scalar_text, "auto, cpu, cuda or cuda:N", "cpu"),
    "results_dir": (_scalar_text, "a directory path", "results"),
    "exp_name": (_scalar_text, "a name", "my_study"),
    "init_from": (_scalar_text, "auto, none or a checkpoint path", "auto"),
}
_POS_INT = (lambda v: _is_int(v) and v >= 1, "a positive integer", "100")
_POS_INT_OR_NULL = (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null", "100")
_BOOL = (lambda v: isinstance(v, bool), "true or false", "true")
TRAINER_KEYS = {
    "epochs": _POS_INT, "max_steps": _POS_INT_OR_NULL, "checkpoint_every": _POS_INT,
    "eval_every": _POS_INT_OR_NULL, "log_every": _POS_INT, "threads": _POS_INT_OR_NULL,
    "eval_splits": (lambda v: v is None or (OmegaConf.is_list(v) and all(isinstance(x, str) for x in v)),
                    "a list of split names or null", "[test]"),
    "progress": _BOOL, "tensorboard": _BOOL, "channels_last": _BOOL, "compile": _BOOL,
    "precision": (lambda v: v in PRECISIONS, " | ".join(PRECISIONS), "bf16"),
    "keep_steps": (lambda v: OmegaConf.is_list(v) and all(_is_int(x) and x >= 0 for x in v),
                   "a list of steps (non-negative integers)", "[50]"),
    "eval_at": (lambda v: OmegaConf.is_list(v) and all(_is_int(x) and x >= 1 for x in v),
                "a list of steps (positive integers)", "[500,1000,2000]"),
    "diverge_factor": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1),
                       "a number above 1 (a multiple of the first loss) or null", "10"),
}


def _recipe_hint(cfg: DictConfig, error: Exception) -> str:
    """A user's model on a recipe written for one of ours (the default optim=ptb_lstm reads
    model.presets): say where the missing model key is asked for."""
    if builders.has_target(cfg.get("model")) and "'model." in str(error):
        return ("; the recipe (optim) reads keys of another model: give yours a recipe, optim=NAME or "
                "`override /optim: NAME` in its defaults (docs/plugins.md)")
    return ""


def check_types(cfg: DictConfig) -> None:
    """Every top-level and trainer key has a value of its type (before anything reads them)."""
    for prefix, node, keys in (("", cfg, TOP_KEYS), ("trainer.", cfg.trainer, TRAINER_KEYS)):
        for key, (ok, what, example) in keys.items():
            if key not in node:
                continue
            try:
                value = node[key]
            except Exception as e:  # an interpolation that cannot resolve
                raise ConfigError(f"{prefix}{key} does not resolve: {str(e).splitlines()[0]}"
                                  f"{_recipe_hint(cfg, e)}") from None
            if not ok(value):
                shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                raise ConfigError(f"{prefix}{key}={shown!r} must be {what}; e.g. {prefix}{key}={example}")


def _check_pattern(p, sparsity: float) -> float:
    """pruning.pattern=N:M fixes the sparsity at 1 - N/M: ``sparsity`` may be left 0 or say the same."""
    pattern = p.get("pattern", "unstructured")
    try:
        nm = parse_pattern(pattern)
    except ValueError as e:
        raise ConfigError(f"pruning.{e}") from None
    if nm is None:
        return sparsity
    implied = pattern_sparsity(pattern)
    if p.name == "none":
        raise ConfigError(f"pruning=none with pruning.pattern={pattern}: use pruning=gradual (or oneshot), or pattern unstructured")
    if p.scheme == "global":
        raise ConfigError(f"pruning.scheme=global with pruning.pattern={pattern}: N:M fixes every tensor at sparsity "
                          f"{implied:g}, so one global threshold has nothing to allocate; use uniform or layerwise_constant")
    if sparsity > 0 and abs(sparsity - implied) > 1e-6:
        raise ConfigError(f"sparsity={sparsity:g} contradicts pruning.pattern={pattern} ({nm[0]} of every {nm[1]} weights "
                          f"kept: sparsity {implied:g}); use sparsity={implied:g} or leave sparsity out")
    return implied


def _check_controls(cfg: DictConfig, sparsity: float) -> None:
    """pruning.criterion, and a fixed-mask run's source (pruning.mask_from, pruning.rewind_step;
    train/plan/start.py). A named source folder is checked here, before any job of a sweep starts;
    mask_from=auto is found when its run starts (earlier waves of the sweep make it)."""
    p = cfg.pruning
    criterion, mask_from, rewind = p.get("criterion", "magnitude"), p.get("mask_from"), p.get("rewind_step")
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown pruning.criterion '{criterion}'; valid: {', '.join(CRITERIA)}")
    if criterion == "random" and p.scheme == "global":
        raise ConfigError("pruning.criterion=random with pruning.scheme=global: one threshold over all tensors is a "
                          "magnitude notion; random pruning keeps a random subset of each tensor: use uniform or layerwise_constant")
    if rewind is not None and not (_is_int(rewind) and rewind >= 0):
        raise ConfigError(f"pruning.rewind_step={rewind} must be a non-negative integer step (or null)")
    if mask_from is None:
        if rewind is not None:
            raise ConfigError(f"pruning.rewind_step={rewind} needs a mask to train: add pruning.mask_from=RUN_DIR "
                              "(or auto), whose masks are fixed while training from the rewound weights")
        return
    if not _scalar_text(mask_from):
        raise ConfigError(f"pruning.mask_from={mask_from!r} must be a run folder, auto or null")
    if p.name == "none":
        raise ConfigError("pruning=none with pruning.mask_from: a fixed-mask run is sparse; use pruning=gradual (the default)")
    if criterion != "magnitude":
        raise ConfigError(f"pruning.criterion={criterion} with pruning.mask_from: a fixed-mask run keeps its source's "
                          "masks and chooses none itself; leave pruning.criterion at magnitude")
    if rewind is not None and str(cfg.init_from) not in ("auto", "none"):
        raise ConfigError(f"pruning.rewind_step={rewind} with init_from={cfg.init_from}: both name the weights; "
                          "give one (rewind_step takes the mask source's kept checkpoint)")
    if sparsity == 0:
        raise ConfigError("pruning.mask_from needs the sparsity of its source: give sparsity= (e.g. sparsity=0.9)")
    if str(mask_from) != "auto":
        source = Path(str(mask_from)).expanduser()
        try:
            check_source(source, cfg, sparsity)
            if rewind is not None:
                kept_checkpoint(source, rewind)
        except StartError as e:
            raise ConfigError(str(e)) from None


def check_builders(cfg: DictConfig) -> None:
    """The model's builder can be found (a registered family or an importable ``_target_``), both
    configs have a name (a family and a dataset in results and the report), and the data declares
    a task prune-cli trains. (Whether the builders return an nn.Module and a DataBundle is known
    only once they have run: prune_cli/train/run.py checks that before the run folder is made.)"""
    m, d = cfg.model, cfg.data
    for group, node in (("model", m), ("data", d)):
        if node.get("name") is None:
            raise ConfigError(f"the {group} config has no name: add `name: <a name>` beside its _target_ "
                              f"(results and the report know the {group} by it)")
    if builders.has_target(m):
        if m.name in models.FAMILIES:
            raise ConfigError(f"model.name={m.name} with a _target_: {m.name} is a built-in family; "
                              "give your model a name of its own")
        try:
            builders.locate(m, "model")
        except builders.BuildError as e:
            raise ConfigError(str(e)) from None
    elif m.name not in models.names():
        raise ConfigError(f"unknown model '{m.name}'; valid: {', '.join(models.names())}")
    if d.get("task") is None:
        raise ConfigError(f"data '{d.name}' declares no task; add `task: {' | '.join(TASKS)}` to its config")
    if d.task not in TASKS:
        raise ConfigError(f"data.task={d.task} is not a task prune-cli trains; use one of {', '.join(TASKS)}")


def check_family_keys(m: DictConfig) -> None:
    """The built-in families' size keys: model.size a preset, width a multiplier, hidden/units counts."""
    if "presets" in m and "size" in m and m.size not in m.presets:
        raise ConfigError(f"unknown model.size '{m.size}' for {m.name}; valid: {', '.join(m.presets)}")
    if "width" in m:
        try:
            width = float(m.width)
        except (TypeError, ValueError):
            width = float("nan")
        if not 0.0 < width <= 1.0:
            raise ConfigError(f"model.width={m.width} is not in (0, 1]: MobileNet's width multiplier scales channels, e.g. 0.25, 0.5, 0.75, 1.0")
    for key in ("hidden", "units"):
        if key in m and (not isinstance(m[key], int) or m[key] < 1):
            raise ConfigError(f"model.{key}={m[key]} must be a positive integer")


def _check_model(cfg: DictConfig) -> None:
    m = cfg.model
    check_builders(cfg)
    if not builders.has_target(m):  # a user's model: its keys mean what its builder says
        check_family_keys(m)
    check_family(m.name, m.get("task"), cfg.data.name, cfg.data.get("task"))
    if "beam_size" in m:
        _positive_int("model.beam_size", m.beam_size, "beams in beam search; 1 = greedy decoding")
    if cfg.trainer.get("eval_beam_size") is not None:
        _positive_int("trainer.eval_beam_size", cfg.trainer.eval_beam_size, "beams when evaluating during training")


def _check_pruning(cfg: DictConfig) -> float:
    """The pruning group against ``sparsity``; returns the run's effective sparsity."""
    sparsity = _fraction("sparsity", cfg.sparsity)
    p = cfg.pruning
    if p.scheme not in SCHEMES:
        raise ConfigError(f"unknown pruning.scheme '{p.scheme}'; valid: {', '.join(SCHEMES)}")
    sparsity = _check_pattern(p, sparsity)
    try:
        check_dynamic(p, sparsity, p.get("pattern", "unstructured"), cfg.init_from)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if p.name == "none" and sparsity > 0:
        raise ConfigError(f"pruning=none with sparsity={sparsity}: use pruning=gradual (or oneshot), or sparsity=0")
    _fraction("pruning.initial_sparsity", p.initial_sparsity)
    if p.initial_sparsity > sparsity and sparsity > 0:
        raise ConfigError(f"pruning.initial_sparsity={p.initial_sparsity} > sparsity={sparsity}: sparsity may only grow")
    if not isinstance(p.frequency, int) or p.frequency < 1:
        raise ConfigError(f"pruning.frequency={p.frequency} must be a positive integer number of steps")
    for key in ("begin_step", "end_step"):
        if p[key] is not None and (not isinstance(p[key], int) or p[key] < 0):
            raise ConfigError(f"pruning.{key}={p[key]} must be a non-negative integer step (or null)")
    if p.begin_step is not None and p.end_step is not None and p.begin_step > p.end_step:
        raise ConfigError(f"pruning.begin_step={p.begin_step} > pruning.end_step={p.end_step}: pruning must begin before it ends")
    if sparsity > 0 and not list(cfg.model.get("prune") or []):
        raise ConfigError(f"sparsity={sparsity} but model {cfg.model.name} has no prunable tensors (model.prune is empty); use sparsity=0")
    return sparsity


def _check_recipe(cfg: DictConfig) -> None:
    """The run's length keys (trainer.max_steps and checkpoint_every: check_types)."""
    if cfg.trainer.get("steps") is not None:
        _positive_int("trainer.steps", cfg.trainer.steps, "the recipe's length in optimizer steps")
    block = cfg.optim.get("from_trained") or {}
    for key in ("steps", "epochs"):
        if block.get(key) is not None and not (isinstance(block[key], (int, float)) and block[key] > 0):
            raise ConfigError(f"optim.from_trained.{key}={block[key]} must be positive "
                              "(the length of a sparse run that starts from a trained dense model)")


def _check_device(cfg: DictConfig) -> None:
    device = str(cfg.device)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"device={device}: use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but no CUDA device is available here; use device=cpu or device=auto")
    if cfg.trainer.precision == "fp16" and (device == "cpu" or (device == "auto" and not torch.cuda.is_available())):
        raise ConfigError("trainer.precision=fp16 needs a GPU (its gradient scaler is CUDA-only); "
                          "on CPU use trainer.precision=bf16 or fp32")


def _check_paths(cfg: DictConfig) -> None:
    init = str(cfg.init_from)
    if init not in ("auto", "none") and not Path(init).expanduser().is_file():
        raise ConfigError(f"init_from={init}: no such checkpoint file; give a checkpoint.pt path, or auto, or none")
    _writable_dir(cfg.results_dir)
    try:
        builders.data_builder(cfg.data)
    except builders.BuildError as e:
        raise ConfigError(str(e)) from None
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that cannot resolve (e.g. a key the family lacks)
        raise ConfigError(f"config does not resolve: {str(e).splitlines()[0]}{_recipe_hint(cfg, e)}") from None


def _first_difference(a, b, prefix: str):
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found = _first_difference(x, y, f"{prefix}{key}.")
            if found:
                return found
        elif x != y:
            return f"{prefix}{key}", x, y
    return None


def _check_budget(cfg: DictConfig) -> None:
    """budget=equal_compute (plan/budget.py): a budget that can be honoured, and a partner that
    is itself a valid run (validated here like any run)."""
    if cfg.get("budget") is None:
        return
    conv = budget.convention(cfg)
    if conv not in budget.CONVENTIONS:
        raise ConfigError(f"unknown budget.convention '{conv}'; valid: {', '.join(budget.CONVENTIONS)}")
    if effective_sparsity(cfg) > 0:
        raise ConfigError(f"budget.match on a sparse run (sparsity={effective_sparsity(cfg):g}): an equal-compute "
                          "run is a dense model given another configuration's training compute; use sparsity=0")
    partner = budget.partner_config(cfg)
    for key in ("name", "task"):
        if partner.model.get(key) != cfg.model.get(key):
            raise ConfigError(f"budget.match changes model.{key} ({cfg.model.get(key)} -> {partner.model.get(key)}): "
                              "a compute match is to another size or sparsity of this run's model family and data")
    try:
        mine, theirs = (OmegaConf.to_container(c.data, resolve=True) for c in (cfg, partner))
    except Exception as e:
        raise ConfigError(f"budget.match: the partner's config does not resolve: {str(e).splitlines()[0]}") from None
    diff = _first_difference(mine, theirs, "data.")
    if diff:
        raise ConfigError(f"budget.match changes {diff[0]} ({diff[1]} -> {diff[2]}): the partner must train on this "
                          "run's dataset and batches; set the key for both runs instead")
    try:
        validate(partner)
    except ConfigError as e:
        raise ConfigError(f"budget.match makes an invalid partner: {e}") from None
    if conv == "sparse_kernels" and effective_sparsity(partner) > 0 and partner.pruning.scheme == "global":
        raise ConfigError("budget.convention=sparse_kernels with a partner pruned by scheme global: its per-tensor "
                          "sparsity, and so its sparse-kernel cost, is known only once it has run; "
                          "use budget.convention=dense_kernels or another scheme")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first problem found in ``cfg``; return quietly when it is fine."""
    check_types(cfg)
    _check_model(cfg)
    sparsity = _check_pruning(cfg)
    _check_recipe(cfg)
    _check_device(cfg)
    _check_paths(cfg)
    _check_controls(cfg, sparsity)
    _check_budget(cfg)
