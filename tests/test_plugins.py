"""A user's own model and dataset (``_target_`` in a --config-dir): found, checked and named the way ours are."""
import json
import textwrap
from pathlib import Path

import pytest
import torch.nn as nn
from omegaconf import OmegaConf

from prune_cli import builders, identity
from prune_cli.config import ConfigError, conf_dir, group_options, search_dirs
from prune_cli.checks import validate
from prune_cli.data import DataBundle
from prune_cli.report.collect import base_of
from prune_cli.train.engine.tasks import task_name

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mlp"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """An importable module ``user_builders`` with good and bad builders."""
    (tmp_path / "user_builders.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from prune_cli.data import DataBundle

        NOT_CALLABLE = 3

        def linear(model_cfg, meta):
            return nn.Linear(meta["num_features"], int(model_cfg.out))

        def not_a_module(model_cfg, meta):
            return {"weight": 1}

        def not_a_bundle(data_cfg, seed):
            return [1, 2, 3]

        def empty_bundle(data_cfg, seed):
            return DataBundle(train_epoch=lambda e, s: iter(()), steps_per_epoch=0, eval_splits={})

        def misnamed_splits(data_cfg, seed):
            return DataBundle(train_epoch=lambda e, s: iter(()), steps_per_epoch=1,
                              eval_splits={"validation": lambda: iter(())})
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_builders"


def node(**kw):
    return OmegaConf.create(kw)


# -- builders --------------------------------------------------------------------------------------
def test_locate_says_what_cannot_be_imported_or_called(user_module):
    assert builders.locate(node(_target_="math.sqrt"), "model")(4.0) == 2.0
    with pytest.raises(builders.BuildError) as e:
        builders.locate(node(_target_="no_such_module_19.build"), "model")
    assert str(e.value).startswith("model._target_=no_such_module_19.build cannot be imported "
                                   "(No module named 'no_such_module_19'); make it importable")
    with pytest.raises(builders.BuildError) as e:
        builders.locate(node(_target_=f"{user_module}.NOT_CALLABLE"), "data")
    assert str(e.value) == (f"data._target_={user_module}.NOT_CALLABLE is a int, not a callable; "
                            "name a function that builds the data")


def test_a_target_and_a_registry_family_are_built_and_checked_alike(user_module):
    read = set()
    model = builders.build_model(node(_target_=f"{user_module}.linear", name="lin", out=3),
                                 {"num_features": 5, "unused": 1}, read)
    assert isinstance(model, nn.Linear) and model.weight.shape == (3, 5) and read == {"num_features"}
    read = set()
    lstm = builders.build_model(node(name="ptb_lstm", hidden=8, layers=1, dropout=0.0, init_range=0.1),
                                {"vocab_size": 11, "dataset": "ptb"}, read)
    assert lstm.embedding.weight.shape == (11, 8) and read == {"vocab_size"}
    with pytest.raises(builders.BuildError, match="^unknown model 'resnet'; valid: gnmt, inception_v3"):
        builders.build_model(node(name="resnet"), {})


def test_a_builder_that_returns_the_wrong_thing_is_one_line(user_module):
    with pytest.raises(builders.BuildError) as e:
        builders.build_model(node(_target_=f"{user_module}.not_a_module", name="x"), {})
    assert str(e.value) == (f"model._target_={user_module}.not_a_module returned dict, not a torch.nn.Module; "
                            "return the network from the builder")
    with pytest.raises(builders.BuildError) as e:
        builders.build_data(node(_target_=f"{user_module}.not_a_bundle", name="x"), 0)
    assert str(e.value).startswith(f"data._target_={user_module}.not_a_bundle returned list, not a "
                                   "prune_cli.data.DataBundle; return DataBundle(")
    with pytest.raises(builders.BuildError, match="steps_per_epoch=0 and eval splits \\[\\]"):
        builders.build_data(node(_target_=f"{user_module}.empty_bundle", name="x"), 0)
    with pytest.raises(builders.BuildError) as e:
        builders.build_data(node(_target_=f"{user_module}.misnamed_splits", name="x", task="classification"), 0)
    assert str(e.value) == (f"data._target_={user_module}.misnamed_splits returned eval splits ['validation']; a "
                            "classification dataset names its held-out splits val and/or test (the run's summary "
                            "and the report read its quality from them)")


def test_the_example_dataset_is_a_databundle_whose_epochs_depend_on_seed_and_epoch_alone(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    cfg = OmegaConf.load(EXAMPLE / "conf" / "data" / "blobs.yaml")
    a, b = builders.build_data(cfg, 3), builders.build_data(cfg, 3)
    assert isinstance(a, DataBundle) and a.steps_per_epoch == cfg.train_size // cfg.batch_size
    assert a.meta == {"num_features": 16, "num_classes": 8, "dataset": "blobs", "synthetic": True}
    first = list(a.train_epoch(1, 0))
    assert len(first) == a.steps_per_epoch
    resumed = list(b.train_epoch(1, 5))  # a resumed epoch: the same batches from batch 5 on
    assert all((x1 == x2).all() and (y1 == y2).all() for (x1, y1), (x2, y2) in zip(first[5:], resumed))
    assert len(resumed) == len(first) - 5
    assert sum(len(y) for _, y in a.eval_splits["val"]()) == cfg.eval_size


def test_task_is_the_models_else_the_datas():
    assert task_name(node(model={"task": "translation"}, data={"task": "classification"})) == "translation"
    assert task_name(node(model={"name": "mlp"}, data={"task": "classification"})) == "classification"


# -- validation on the composed config ---------------------------------------------------------------
def compose_example(tmp_path, *overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module("prune_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "model=mlp",
                                           f"results_dir={tmp_path}", *overrides])
    with_no_run_id = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "run_id"])
    return with_no_run_id


def test_the_example_composes_and_validates(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    cfg = compose_example(tmp_path, "sparsity=0.9", "model.hidden=32")
    validate(cfg)
    assert cfg.model._target_ == "blobs_mlp.model.build_mlp" and cfg.data.name == "blobs"
    assert cfg.optim.lr == 0.05 and cfg.model.hidden == 32  # the example's recipe, any model key swept


@pytest.mark.parametrize("override, message", [
    ("model._target_=no_such_module_19.build", "model._target_=no_such_module_19.build cannot be imported"),
    ("data._target_=blobs_mlp.data", "data._target_=blobs_mlp.data is a module, not a callable"),
    ("~data.task", "data 'blobs' declares no task; add `task: language_model | classification | translation`"),
    ("data.task=regression", "data.task=regression is not a task prune-cli trains"),
    ("~model.name", "the model config has no name: add `name: <a name>` beside its _target_"),
    ("model.name=mobilenet", "model.name=mobilenet with a _target_: mobilenet is a built-in family"),
    ("+model.task=language_model", "model mlp is a language_model model but data=blobs is a classification dataset"),
    ("optim=ptb_lstm", "does not resolve: Interpolation key 'model.size' not found; the recipe (optim) reads keys "
                       "of another model: give yours a recipe"),
])
def test_bad_plugin_configs_are_one_line(tmp_path, monkeypatch, override, message):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    with pytest.raises(ConfigError) as e:
        validate(compose_example(tmp_path, override))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, message", [
    ("model._target_=user_builders.not_a_module", "model._target_=user_builders.not_a_module returned dict, not a "
                                                 "torch.nn.Module; return the network from the builder"),
    ("data._target_=user_builders.not_a_bundle", "data._target_=user_builders.not_a_bundle returned list, not a "
                                                "prune_cli.data.DataBundle; return DataBundle("),
    ("model.prune=[fc.weight]", "parameter pattern 'fc.weight' matches nothing; the model's parameters are: "
                                "0.weight, 0.bias, 2.weight"),
])
def test_what_builders_return_is_checked_before_the_run_folder_is_written(tmp_path, monkeypatch, capsys, user_module,
                                                                          override, message):
    import torch
    from omegaconf import open_dict

    from prune_cli.train.run import run

    monkeypatch.syspath_prepend(str(EXAMPLE))
    results = tmp_path / "results"
    cfg = compose_example(results, override, "trainer.progress=false", "sparsity=0.5")
    with open_dict(cfg):
        cfg.run_id = "r"  # what Hydra's run_id resolver gives a job
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as e:
            run(cfg)
    finally:
        torch.set_num_threads(threads)  # run() sets this process's threads for the job
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith(f"prune-run: error: {message}"), lines
    assert not results.exists()


def test_a_user_models_keys_mean_what_its_builder_says(tmp_path, monkeypatch):
    """model.width=64 is no MobileNet width multiplier on a user's model."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    validate(compose_example(tmp_path, "+model.width=64"))


def test_an_unknown_choice_lists_the_users_options_too(monkeypatch):
    import io

    from prune_cli import cli

    err = io.StringIO()
    monkeypatch.setattr(cli, "_stderr", err)  # where prune-run's one-line errors go
    dirs = search_dirs(["-cd", str(EXAMPLE / "conf")])
    with pytest.raises(SystemExit) as e:
        cli.check_group_choices(["model=nope"], dirs)
    assert e.value.code == 2
    assert err.getvalue() == ("prune-run: error: unknown model 'nope'; valid: gnmt, inception_v3, mlp, mobilenet, "
                              "ptb_lstm\n")
    cli.check_group_choices(["model=mlp", "data=blobs"], dirs)


def test_group_options_and_search_dirs_see_the_users_config_dir(tmp_path):
    mine = EXAMPLE / "conf"
    for args in (["--config-dir", str(mine)], [f"--config-dir={mine}"], ["-cd", str(mine)]):
        assert search_dirs(["model=mlp", *args]) == [conf_dir(), mine]
    assert search_dirs(["model=mlp"]) == [conf_dir()]
    assert search_dirs(["-cd", str(tmp_path), "--config-dir", str(mine)]) == [conf_dir(), mine]  # as Hydra: the last
    assert "mlp" in group_options("model", [conf_dir(), mine]) and "mlp" not in group_options("model")
    assert group_options("data", [conf_dir(), mine]) == sorted(group_options("data") + ["blobs"])


# -- identity and the report -------------------------------------------------------------------------
def test_a_runs_fingerprint_follows_what_it_computes_not_where_it_writes():
    base = node(model={"hidden": 64, "prune": ["*.weight"]}, seed=0, results_dir="a", trainer={"progress": True})
    excluded = ["results_dir", "trainer.progress"]
    same = node(model={"hidden": 64, "prune": ["*.weight"]}, seed=0, results_dir="b", trainer={"progress": False})
    wider = node(model={"hidden": 128, "prune": ["*.weight"]}, seed=0, results_dir="a", trainer={"progress": True})
    assert identity.fingerprint(base, excluded) == identity.fingerprint(same, excluded)
    assert identity.fingerprint(base, excluded) != identity.fingerprint(wider, excluded)
    assert len(identity.fingerprint(base, excluded)) == 8
    sources = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               {"path": "/home/me/my_conf", "schema": "file", "provider": "command-line"},
               {"path": "", "schema": "structured", "provider": "schema"}]
    assert identity.user_dirs(sources) == [Path("/home/me/my_conf")] and identity.user_dirs(sources[:1]) == []


def test_a_family_the_report_does_not_know_is_named_by_its_model_config():
    spec = json.dumps({"_target_": "m.build", "name": "mlp", "prune": ["*.weight"], "hidden": 64, "depth": 2})
    assert base_of({"family": "mlp", "hidden": 64, "model_config": spec, "params_total": 5768}) == \
        ("depth=2,hidden=64", 5768.0)
    # the paper's families keep their own names
    assert base_of({"family": "mobilenet", "width": 0.5, "model_config": spec}) == ("0.5", 0.5)
    assert base_of({"family": "ptb_lstm", "size": "small", "hidden": 200, "model_config": spec}) == ("small", 200.0)
