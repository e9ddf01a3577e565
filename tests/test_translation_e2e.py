"""prune-run end to end for the translation family (GNMT) on a tiny generated Multi30k-layout
corpus (runs anywhere, in seconds): the results contract with BLEU, exact NNZ with the
attention left dense, a sparse run from the trained dense model with its own recipe, exact
resume after kill -9, bad input refused before any work, and a fake_wmt16 parameter count."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prune_cli.models.gnmt import param_count, prunable_count
from prune_cli.pruning import keep_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_translation_data import tiny_multi30k  # noqa: E402  (the data tests' corpus generator)

pytestmark = pytest.mark.slow

VOCAB = 100
TINY = ["model=gnmt", "model.layers=2", "model.units=16", "model.beam_size=2", f"data.vocab_size={VOCAB}",
        "data.batch_size=8", "data.eval_batch_size=8", "data.pool=3", "data.download=false",
        "trainer.epochs=2", "trainer.checkpoint_every=4", "trainer.log_every=3", "trainer.progress=false",
        "pruning.frequency=2", "optim.from_trained.epochs=1"]
PRUNED = ["src_embedding.weight", "tgt_embedding.weight", "enc_bi.weight_ih_l0", "enc_bi.weight_hh_l0",
          "enc_bi.weight_ih_l0_reverse", "enc_bi.weight_hh_l0_reverse", "enc_uni.0.weight_ih_l0",
          "enc_uni.0.weight_hh_l0", "dec_cell.weight_ih", "dec_cell.weight_hh", "dec_layers.0.weight_ih_l0",
          "dec_layers.0.weight_hh_l0", "softmax.weight"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tiny_multi30k(root, n_train=120, n_eval=12)  # 15 steps an epoch at batch 8
    return root


def tiny(*extra):
    """TINY with ``extra`` overrides replacing the same keys (Hydra takes each key once)."""
    keys = {a.lstrip("+").split("=")[0] for a in extra}
    return [a for a in TINY if a.split("=")[0] not in keys] + list(extra)


def prune_run(args, data_root, results, **kw):
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root), "PRUNE_CACHE_DIR": str(Path(results) / "cache")}
    cmd = [sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={results}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


def run_dir(results, exp="default"):
    dirs = [d for d in (Path(results) / "runs" / exp).iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def summary(results, exp="default"):
    return json.loads((run_dir(results, exp) / "summary.json").read_text())


def test_dense_then_sparse_from_it_write_the_results_contract(data_root, tmp_path):
    out = prune_run(TINY + ["exp_name=dense"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    d = summary(tmp_path, "dense")
    total = param_count(VOCAB, 16, 2)
    assert (d["model"], d["family"], d["units"], d["dataset"], d["direction"]) == ("gnmt", "gnmt", 16, "multi30k", "de-en")
    assert d["params_total"] == d["params_nnz"] == total and d["target_sparsity"] == 0.0
    assert d["steps"] == 30 and d["epochs"] == 2 and d["lr"] == 1e-3 and d["init_from"] == "scratch"
    for key in ("bleu", "val_bleu", "perplexity", "val_perplexity"):
        assert isinstance(d[key], float) and d[key] >= 0, key
    assert d["bleu_signature"] == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" + \
        __import__("sacrebleu").__version__
    metrics = read_csv(run_dir(tmp_path, "dense") / "metrics.csv")
    got = {(m["split"], m["metric"]) for m in metrics}
    assert got >= {("train", "loss"), ("train", "perplexity"), ("train", "lr"), ("valid", "loss"),
                   ("valid", "perplexity"), ("valid", "bleu"), ("test", "bleu"), ("test", "sentences")}
    valid_bleu = [(int(m["step"]), float(m["value"])) for m in metrics if (m["split"], m["metric"]) == ("valid", "bleu")]
    assert [s for s, _ in valid_bleu] == [15, 30] and valid_bleu[-1][1] == d["val_bleu"]  # epoch 1 greedy, end beam
    assert [float(m["value"]) for m in metrics if (m["split"], m["metric"]) == ("test", "sentences")] == [12.0]

    out = prune_run(TINY + ["exp_name=sparse", "sparsity=0.75"], data_root, tmp_path)
    assert out.returncode == 0, out.stderr
    s = summary(tmp_path, "sparse")
    assert s["init_from"] == str(run_dir(tmp_path, "dense") / "checkpoint.pt")
    # From the trained model: optim.from_trained's rate (half the dense one) and length (1 epoch).
    assert s["lr"] == 5e-4 and s["steps"] == 15 and s["epochs"] == 1
    rows = read_csv(run_dir(tmp_path, "sparse") / "sparsity.csv")
    last = [r for r in rows if int(r["step"]) == max(int(x["step"]) for x in rows)]
    assert [r["layer"] for r in last] == PRUNED  # attention (and biases) never pruned
    assert all(int(r["nnz"]) == keep_count(int(r["numel"]), 0.75) for r in last)
    assert sum(int(r["numel"]) for r in last) == prunable_count(VOCAB, 16, 2)
    assert s["params_total"] == total
    assert s["params_nnz"] == total - sum(int(r["numel"]) - int(r["nnz"]) for r in last)
    assert s["achieved_sparsity"] == pytest.approx(0.75, abs=1e-3)
    lrs = [float(m["value"]) for m in read_csv(run_dir(tmp_path, "sparse") / "metrics.csv")
           if (m["split"], m["metric"]) == ("train", "lr")]
    assert set(lrs) == {5e-4}


def test_kill_9_then_same_command_ends_with_identical_numbers(data_root, tmp_path):
    dense = tmp_path / "dense"
    assert prune_run(tiny("trainer.epochs=1"), data_root, dense).returncode == 0
    init = run_dir(dense) / "checkpoint.pt"
    # A sparse run from the trained model (its own recipe), with dropout: everything must resume.
    args = tiny("sparsity=0.6", f"init_from='{init}'", "optim.from_trained.epochs=2", "trainer.checkpoint_every=3")
    clean = tmp_path / "clean"
    out = prune_run(args, data_root, clean)
    assert out.returncode == 0, out.stderr
    want = summary(clean)

    killed = tmp_path / "killed"
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root), "PRUNE_CACHE_DIR": str(killed / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={killed}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list(killed.glob("runs/default/*/checkpoint.pt"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "run ended before its first checkpoint"
    assert not (ckpt.parent / "summary.json").exists()
    out = prune_run(args, data_root, killed)
    assert out.returncode == 0, out.stderr
    got = summary(killed)
    for key in ("bleu", "val_bleu", "perplexity", "val_perplexity", "params_nnz", "achieved_sparsity", "steps",
                "lr", "init_from", "bleu_signature"):
        assert got[key] == want[key], key
    assert want["steps"] == 30 and want["lr"] == 5e-4
    strip = lambda rows: [(r["step"], r["split"], r["metric"], r["value"]) for r in rows]  # noqa: E731
    assert strip(read_csv(run_dir(killed) / "metrics.csv")) == strip(read_csv(run_dir(clean) / "metrics.csv"))
    assert read_csv(run_dir(killed) / "sparsity.csv") == read_csv(run_dir(clean) / "sparsity.csv")


@pytest.mark.parametrize("bad, message", [
    (["data.direction=fr-en"], "fr-en"),
    (["model.units=0"], "model.units=0 must be a positive integer"),
    (["model.beam_size=0"], "model.beam_size=0 must be a positive integer"),
    (["data=ptb"], "model gnmt is a translation model but data=ptb is a language_model dataset; "
                   "use data=fake_wmt16|multi30k|wmt16"),
    (["model=ptb_lstm", "data=multi30k"], "model ptb_lstm is a language_model model but data=multi30k is a "
                                          "translation dataset; use data=ptb"),
    (["model=mobilenet", "data=multi30k"], "model mobilenet is a classification model but data=multi30k is a "
                                           "translation dataset; use data="),
    (["data=wmt16"], "wmt16"),
    (["-m", "sparsity=0,0.5", "model.beam_size=1,0"], "model.beam_size=0 must be a positive integer"),
])
def test_bad_input_one_line_exit_2_results_untouched(data_root, tmp_path, bad, message):
    keep = tmp_path / "runs" / "old" / "r" / "summary.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    flags = [a for a in bad if a.startswith("-")]
    args = tiny(*[a for a in bad if a not in flags])
    if "data=wmt16" in bad:  # without the Multi30k-only keys
        args = ["model=gnmt", "data=wmt16", "trainer.progress=false"]
    out = prune_run(flags + args, data_root, tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prune-run: error: ") and message in lines[0], out.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before and keep.read_text() == "{}"


def test_fake_wmt16_smoke_has_the_papers_parameter_count(tmp_path):
    args = ["model=gnmt", "data=fake_wmt16", "model.units=256", "model.beam_size=1", "data.batch_size=4",
            "data.eval_batch_size=4", "data.valid_size=4", "data.test_size=4", "data.max_decode_len=3",
            "trainer.max_steps=1", "trainer.progress=false"]
    out = prune_run(args, tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    s = summary(tmp_path)
    # 3Vk + 94k^2 (+ biases) with the paper's V = 36,548: 34.2M at k = 256 (the paper: 34M).
    assert s["params_total"] == param_count(36_548, 256, 4) == 3 * 36_548 * 256 + 94 * 256 ** 2 + 74 * 256 + 1
    assert round(s["params_total"] / 1e6, 1) == 34.2
    assert s["synthetic"] is True and s["dataset"] == "fake_wmt16" and s["steps"] == 1
    assert s["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:none|")
