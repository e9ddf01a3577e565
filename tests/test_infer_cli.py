"""prune-infer on real prune-export files: the family's metric equals the dense model's evaluation
(and, end to end, the run's own), every format and kernel choice, and bad input is one line, exit 2."""
import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prune_cli import data as datasets
from prune_cli import export, models
from prune_cli.infer import cli
from prune_cli.infer.engine import load
from prune_cli.pruning import ConstantSchedule, Pruner
from prune_cli.train.engine.tasks import build_task

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
PTB_PRUNE = ["embedding.weight", "lstm.weight_*", "decoder.weight"]
MOBILENET_PRUNE = ["blocks.*.pw.weight", "fc.weight"]


@pytest.fixture(autouse=True)
def no_data_root_from_the_environment(monkeypatch):
    """prune-infer prefers $PRUNE_DATA_ROOT (set by `make test` on machines with shared data) to
    the data root a file's run recorded; these tests' files point at their own tiny datasets."""
    monkeypatch.delenv("PRUNE_DATA_ROOT", raising=False)


@pytest.fixture(scope="module")
def ptb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "ptb").mkdir()
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["<unk>"]
    for split, lines in (("train", 60), ("valid", 20), ("test", 10)):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(lines))
        (root / "ptb" / f"ptb.{split}.txt").write_text(text + "\n")
    return root


def ptb_config(root, sparsity):
    return {"model": {"name": "ptb_lstm", "task": "language_model", "hidden": 12, "layers": 2, "dropout": 0.0,
                      "init_range": 0.3, "prune": PTB_PRUNE},
            "data": {"name": "ptb", "root": str(root), "batch_size": 4, "bptt": 5, "eval_batch_size": 1,
                     "eval_bptt": 40, "download": False},
            "optim": {}, "trainer": {"channels_last": False}, "seed": 0, "sparsity": sparsity}


def make_run(folder: Path, config: dict, sparsity: float, seed: int = 0, prepare=None):
    """A finished run folder as prune-run leaves it (checkpoint + summary), without training.
    Returns the dense masked model, for the expected numbers."""
    cfg = OmegaConf.create(config)
    data = datasets.build(cfg.data, 0)
    torch.manual_seed(seed)
    model = models.build(cfg.model, data.meta)
    if prepare:
        prepare(model)
    pruner = Pruner(model, ConstantSchedule(sparsity), list(cfg.model.prune))
    pruner.step(0)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "pruner": pruner.state_dict(), "config": config}, folder / "checkpoint.pt")
    meta = {k: data.meta[k] for k in ("num_classes", "image_size", "vocab_size") if k in data.meta}
    (folder / "summary.json").write_text(json.dumps({"run_id": folder.name, "model_meta": meta}))
    return model.eval(), cfg, data


def expected(model, cfg, data, split):
    with torch.no_grad():
        return build_task(cfg, torch.device("cpu")).evaluate(model, data.eval_splits[split]())


def infer(capsys, *argv):
    rc = cli.main([*map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def ptb_files(ptb_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("ptb_runs")
    files = {}
    for sparsity in (0.5, 0.9):
        model, cfg, data = make_run(base / f"run{sparsity}", ptb_config(ptb_root, sparsity), sparsity)
        for fmt, dtype in (("dense", "float32"), ("bitmask", "float32"), ("csr", "float32"), ("csr", "int8"),
                           ("bitmask", "int8")):
            path = base / f"s{sparsity}_{fmt}_{dtype}.safetensors"
            export.export_run(base / f"run{sparsity}", path, fmt, dtype, record=False)
            files[sparsity, fmt, dtype] = path
        files[sparsity] = expected(model, cfg, data, "valid")
    return files


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("fmt, kernels", [("dense", "auto"), ("bitmask", "auto"), ("csr", "sparse"),
                                          ("csr", "auto"), ("csr", "dense")])
def test_ptb_perplexity_equals_the_dense_evaluation(ptb_files, capsys, sparsity, fmt, kernels):
    rc, out, err = infer(capsys, ptb_files[sparsity, fmt, "float32"], "--json", "--kernels", kernels, "--threads", 1)
    assert rc == 0, err
    res = json.loads(out)
    want = ptb_files[sparsity]
    assert res["tokens"] == want["tokens"] and res["tokens"] > 0
    # float rounding only: CSR sums in another order, and LSTM models run on ATen's native
    # kernels where the evaluation used oneDNN's
    assert res["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
    assert res["format"] == fmt and res["dtype"] == "float32" and res["threads"] == 1
    assert res["tokens_per_s"] > 0 and res["latency_ms"] > 0 and res["decode_s"] > 0 and res["cpu_latency_ms"] >= 0
    assert res["batches"] == math.ceil(want["tokens"] / 40) and res["batch_size"] == 1 and res["bptt"] == 40 and res["split"] == "valid"
    layers = res["layers"]
    if fmt == "csr":
        assert [d["layer"] for d in layers] == ["embedding", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                                "lstm.weight_ih_l1", "lstm.weight_hh_l1", "decoder"]
        assert all(d["kernel"] == (kernels if kernels != "auto" else d["kernel"]) for d in layers)
        assert all(d["kernel"] in ("sparse", "dense") and d["reason"] for d in layers)
        assert all(abs(d["sparsity"] - sparsity) < 0.01 for d in layers)
    else:
        assert layers == []


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_token_by_token_perplexity_is_the_same_from_csr_bitmask_and_dense_files(ptb_files, capsys, sparsity):
    """--bptt 1 runs the fused one-step LSTM ([W_ih | W_hh] in one product, another summation
    order than nn.LSTM's): every file and kernel choice gives the dense evaluation's perplexity
    to 1e-5 (measured here: within 1e-6)."""
    want = ptb_files[sparsity]
    runs = {}
    for fmt, kernels in (("dense", "auto"), ("bitmask", "auto"), ("csr", "sparse"), ("csr", "auto"), ("csr", "dense")):
        rc, out, err = infer(capsys, ptb_files[sparsity, fmt, "float32"], "--json", "--bptt", 1, "--kernels", kernels,
                             "--threads", 1)
        assert rc == 0, err
        runs[fmt, kernels] = res = json.loads(out)
        assert res["bptt"] == 1 and res["batches"] == res["tokens"] == want["tokens"]
        assert res["perplexity"] == pytest.approx(want["perplexity"], rel=1e-5)
        assert res["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert all(d["kernel"] == "sparse" for d in runs["csr", "sparse"]["layers"])
    assert all(d["kernel"] == "dense" for d in runs["csr", "dense"]["layers"])


def test_a_perplexity_too_large_for_a_float_is_inf(ptb_root, tmp_path, capsys):
    """Issue 29: exp(loss) overflows a float -> perplexity inf in the JSON and the readable
    line, exit status 0 (not an OverflowError)."""
    def blow_up(model):  # logits of order 1e5: a mean NLL far above log(float max) = 709.8
        with torch.no_grad():
            model.decoder.weight.mul_(1e5)

    make_run(tmp_path / "run", ptb_config(ptb_root, 0.5), 0.5, prepare=blow_up)
    path = tmp_path / "huge.safetensors"
    export.export_run(tmp_path / "run", path, "csr", "float32", record=False)
    rc, out, err = infer(capsys, path, "--json", "--kernels", "sparse", "--max-batches", 2)
    assert rc == 0, err
    res = json.loads(out)
    assert res["perplexity"] == math.inf and res["loss"] > 709.8 and math.isfinite(res["loss"])
    rc, out, err = infer(capsys, path, "--max-batches", 2)
    assert rc == 0, err
    assert "perplexity inf" in out.splitlines()[-1]


def test_int8_csr_runs_sparse_on_the_dequantized_weights(ptb_files, capsys):
    runs = {}
    for fmt in ("csr", "bitmask"):
        rc, out, err = infer(capsys, ptb_files[0.9, fmt, "int8"], "--json", "--kernels", "sparse")
        assert rc == 0, err
        runs[fmt] = json.loads(out)
    assert runs["csr"]["dtype"] == "int8" and all(d["kernel"] == "sparse" for d in runs["csr"]["layers"])
    assert runs["csr"]["perplexity"] == pytest.approx(runs["bitmask"]["perplexity"], rel=1e-6)
    assert runs["csr"]["perplexity"] != ptb_files[0.9]["perplexity"]  # quantized, so not the float32 model


def test_batch_bptt_max_batches_and_readable_output(ptb_files, capsys):
    rc, out, err = infer(capsys, ptb_files[0.5, "csr", "float32"], "--kernels", "auto", "--crossover", "0.9",
                         "--batch-size", 2, "--bptt", 1, "--max-batches", 5)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "layer embedding: dense (sparsity 50% below crossover 90%)"
    assert len(lines) == 7 and lines[-1].startswith("ptb_lstm on ptb valid: perplexity ")
    assert "over 10 tokens (5 batches, batch 2 x 1 tokens)" in lines[-1] and "csr float32" in lines[-1]
    _, out, _ = infer(capsys, ptb_files[0.5, "csr", "float32"], "--json", "--threads", 1, "--max-batches", 1)
    cpu = json.loads(out)["cpu"]  # the machine every figure was measured on
    assert cpu and f"1 thread on {cpu}," in infer(capsys, ptb_files[0.5, "csr", "float32"], "--threads", 1)[1]
    assert lines[-1].count("perplexity") == 1  # not "perplexity X perplexity X" (LM and translation both have it)
    rc, out, _ = infer(capsys, ptb_files[0.9, "csr", "float32"], "--crossover", "0.85", "--json", "--max-batches", 1)
    assert all(d["kernel"] == "sparse" and "at or above crossover 85%" in d["reason"] for d in json.loads(out)["layers"])


def test_model_rebuilt_from_the_file_alone_without_data(ptb_files, ptb_root, tmp_path):
    loaded = load(ptb_files[0.9, "csr", "float32"], kernels="sparse", with_data=False)
    dense = load(ptb_files[0.9, "dense", "float32"], with_data=False)
    x = torch.randint(0, loaded.model.vocab, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], dense.model(x)[0], rtol=1e-5, atol=1e-6)


def test_mobilenet_top1_equals_the_dense_evaluation(tmp_path, capsys):
    from test_vision_data import make_archive

    make_archive(tmp_path / "root" / "cifar10_jpg.tar.gz")
    config = {"model": {"name": "mobilenet", "task": "classification", "width": 0.25, "num_classes": None,
                        "dropout": 0.0, "small_input": None, "stride1_blocks": [], "prune": MOBILENET_PRUNE},
              "data": {"name": "cifar10", "root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "cache"),
                       "batch_size": 8, "eval_batch_size": 7, "augment": False, "download": False,
                       "channels_last": True},
              "optim": {"label_smoothing": 0.0}, "trainer": {"channels_last": True}, "seed": 0, "sparsity": 0.75}

    def prepare(model):  # trained-looking BatchNorm statistics and a classifier that separates classes
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
            model.fc.weight.normal_(0, 1.0)

    model, cfg, data = make_run(tmp_path / "run", config, 0.75, prepare=prepare)
    model = model.to(memory_format=torch.channels_last)
    want = expected(model, cfg, data, "val")
    for fmt in ("bitmask", "csr"):
        path = tmp_path / f"m_{fmt}.safetensors"
        export.export_run(tmp_path / "run", path, fmt, "float32", record=False)
        rc, out, err = infer(capsys, path, "--json", "--kernels", "sparse" if fmt == "csr" else "auto")
        assert rc == 0, err
        res = json.loads(out)
        assert res["images"] == want["images"] == 20 and res["batches"] == 3
        assert res["top1"] == want["top1"] and res["top5"] == want["top5"]
        assert res["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert res["images_per_s"] > 0
        if fmt == "csr":
            assert len(res["layers"]) == 14 and all(d["kernel"] == "sparse" for d in res["layers"])


# -- bad input: one line, exit status 2 ------------------------------------------------------
def _one_line_error(rc, out, err, fragment):
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prune-infer: error: ") and fragment in lines[0], err


def test_bad_files_are_one_line_exit_2(ptb_files, tmp_path, capsys):
    from safetensors.torch import save_file

    good = ptb_files[0.5, "csr", "float32"].read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(1000))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    cases = {tmp_path / "missing.safetensors": "does not exist", tmp_path: "is not a file",
             tmp_path / "truncated.safetensors": "truncated.safetensors",
             tmp_path / "garbage.safetensors": "garbage.safetensors",
             tmp_path / "empty.safetensors": "empty.safetensors",
             tmp_path / "foreign.safetensors": "not written by prune-export"}
    for path, fragment in cases.items():
        _one_line_error(*infer(capsys, path, "--json"), fragment)


def test_bad_options_and_missing_data_are_one_line_exit_2(ptb_files, tmp_path, capsys):
    f = ptb_files[0.5, "csr", "float32"]
    _one_line_error(*infer(capsys, f, "--batch-size", 0), "--batch-size must be a positive integer")
    _one_line_error(*infer(capsys, f, "--crossover", 1.5), "--crossover must be a sparsity in [0, 1]")
    _one_line_error(*infer(capsys, f, "--data-root", tmp_path / "nodata"), "PTB files missing")
    with pytest.raises(SystemExit) as e:
        cli.main([str(f), "--kernels", "fastest"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prune-infer: error: argument --kernels")


def test_console_script(ptb_files, ptb_root):
    exe = Path(sys.executable).parent / "prune-infer"
    if not exe.exists():
        pytest.skip("prune-infer is not installed in this environment")
    env = {**os.environ, "PRUNE_DATA_ROOT": str(ptb_root)}
    ok = subprocess.run([str(exe), str(ptb_files[0.5, "bitmask", "float32"]), "--json", "--max-batches", "1"],
                        capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["format"] == "bitmask"
    bad = subprocess.run([str(exe), "/no/such/file"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""


# -- end to end: a real run's evaluation ------------------------------------------------------
@pytest.mark.slow
def test_prune_run_val_perplexity_equals_prune_infer_on_its_export(ptb_root, tmp_path, capsys):
    args = ["model.size=small", "model.hidden=16", "data.batch_size=4", "data.bptt=5", "data.eval_bptt=50",
            "trainer.max_steps=6", "trainer.progress=false", "data.download=false", "sparsity=0.75",
            "init_from=none", "pruning.begin_step=0", "pruning.end_step=4", "pruning.frequency=2",
            f"results_dir={tmp_path}"]
    env = {**os.environ, "PRUNE_DATA_ROOT": str(ptb_root)}
    run = subprocess.run([sys.executable, "-m", "prune_cli.cli", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    (run_dir,) = [d for d in (tmp_path / "runs" / "default").iterdir() if d.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["achieved_sparsity"] == pytest.approx(0.75, abs=1e-3)
    for fmt, kernels in (("csr", "sparse"), ("csr", "auto"), ("bitmask", "auto")):
        path = tmp_path / f"run_{fmt}.safetensors"
        export.export_run(run_dir, path, fmt, "float32", record=False)
        rc, out, err = infer(capsys, path, "--json", "--kernels", kernels)
        assert rc == 0, err
        res = json.loads(out)
        assert res["perplexity"] == pytest.approx(summary["val_perplexity"], rel=1e-6), (fmt, kernels)


def test_gnmt_greedy_bleu_equals_the_dense_evaluation(tmp_path, capsys):
    """A translation file: prune-infer decodes greedily (beam 1) and its BLEU over the split is
    the task's own evaluation of the dense masked model, with CSR and with dense kernels."""
    config = {"model": {"name": "gnmt", "task": "translation", "units": 8, "layers": 2, "dropout": 0.0,
                        "init_range": 0.5, "forget_bias": 1.0, "beam_size": 10, "length_penalty": 1.0,
                        "max_decode_ratio": 2.0, "max_decode_extra": 10,
                        "prune": ["src_embedding.weight", "tgt_embedding.weight", "enc_*.weight_*",
                                  "dec_*.weight_*", "softmax.weight"]},
              "data": {"name": "fake_wmt16", "task": "translation", "direction": "de-en", "vocab_size": 200,
                       "train_size": 128, "valid_size": 12, "test_size": 12, "len_median": 6, "len_sigma": 0.3,
                       "zipf": 1.0, "data_seed": 0, "max_len": 12, "too_long": "drop", "batch_size": 8,
                       "eval_batch_size": 5, "pool": 4, "max_decode_len": 20},
              "optim": {}, "trainer": {"channels_last": False, "eval_beam_size": 1}, "seed": 0, "sparsity": 0.9}
    model, cfg, data = make_run(tmp_path / "run", config, 0.9)
    with torch.no_grad():
        want = build_task(cfg, torch.device("cpu"), data.meta).evaluate(model, data.eval_splits["valid"]())
    path = tmp_path / "m.safetensors"
    export.export_run(tmp_path / "run", path, "csr", "float32", record=False)
    for kernels in ("sparse", "dense"):
        rc, out, err = infer(capsys, path, "--json", "--kernels", kernels)
        assert rc == 0, err
        res = json.loads(out)
        assert res["sentences"] == want["sentences"] == 12
        assert res["bleu"] == pytest.approx(want["bleu"], abs=1e-9)
        assert res["loss"] == pytest.approx(want["loss"], rel=1e-5) and want["loss"] > 1.0
        assert res["sentences_per_s"] > 0
