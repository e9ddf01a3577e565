"""Fault injection (issue 29): broken dataset files, half-written run folders, diverged runs and
perplexities of inf, each on tiny generated data.

Datasets: a file that is empty, cut short, binary, or a damaged copy of the published one is one
line naming the file (DataError), and prune-run exits with status 2 before it writes anything
(three faults go through the real console entry point in a subprocess, ~3 s each; the others
call the same checks in-process). The report: broken or vanishing run folders are listed with
the reason and the exit status stays 0 unless nothing could be read; diverged runs are listed,
kept out of means and pairings, and marked in the figures.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

import prune_cli.data as data
from prune_cli.data import DataError, cifar10 as c10, files, multi30k, ptb
from prune_cli.report import cli, collect as collect_mod, figures
from prune_cli.report.study import study_table

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper"
WORDS = [f"w{i}" for i in range(40)] + ["<unk>"]
TINY_PTB = ["model.size=small", "model.hidden=16", "data.batch_size=4", "data.bptt=5", "data.eval_bptt=50",
            "trainer.max_steps=4", "trainer.progress=false", "data.download=false"]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def ptb_text(n_lines: int, seed: int) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n_lines)) + "\n"


def write_ptb(root: Path, **override) -> Path:
    d = root / "ptb"
    d.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate((("train", 120), ("valid", 20), ("test", 20))):
        body = override.get(split, ptb_text(n, seed))
        (d / f"ptb.{split}.txt").write_bytes(body if isinstance(body, bytes) else body.encode())
    return d


def ptb_cfg(root, **kw):
    return OmegaConf.create({"name": "ptb", "root": str(root), "batch_size": 4, "bptt": 5,
                             "eval_batch_size": 1, "download": False, **kw})


def prune_run(args, data_root, results, cache=None):
    env = {**os.environ, "PRUNE_DATA_ROOT": str(data_root), "PRUNE_CACHE_DIR": str(cache or Path(results) / "cache")}
    cmd = [sys.executable, "-m", "prune_cli.cli", *args, f"results_dir={results}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def refused(out, results: Path) -> str:
    """prune-run's one line, after checking exit status 2 and an untouched results folder."""
    assert out.returncode == 2, out.stderr
    line = one_line(out.stderr)
    assert line.startswith("prune-run: error: ")
    assert not (results / "runs").exists() or not any((results / "runs").rglob("*"))
    return line


def publish(monkeypatch, module, key, path: Path, sha="SHA256", size="SIZE", head="HEAD_SHA256") -> bytes:
    """Make the tiny file at ``path`` the 'published' one of ``module`` for the test."""
    raw = path.read_bytes()
    monkeypatch.setitem(getattr(module, sha), key, hashlib.sha256(raw).hexdigest())
    monkeypatch.setitem(getattr(module, size), key, len(raw))
    monkeypatch.setitem(getattr(module, head), key, hashlib.sha256(raw[:files.HEAD]).hexdigest())
    return raw


# ============================================================================ PTB
def test_ptb_empty_valid_file_is_refused_before_training(tmp_path):
    """The issue's case: an empty ptb.valid.txt trained to the end and died at evaluation."""
    write_ptb(tmp_path / "data", valid="")
    line = refused(prune_run(TINY_PTB, tmp_path / "data", tmp_path / "res"), tmp_path / "res")
    assert "ptb.valid.txt is empty (0 bytes)" in line and "data.download=true" in line


def test_ptb_binary_file_is_refused_before_training(tmp_path):
    write_ptb(tmp_path / "data", test=ptb_text(20, 3).encode() + b"\x00\x00\x7f\x01garbage\n")
    line = refused(prune_run(TINY_PTB, tmp_path / "data", tmp_path / "res"), tmp_path / "res")
    assert "ptb.test.txt holds binary data (control byte 0x00 on line 21)" in line


@pytest.mark.parametrize("split, body, words", [
    ("valid", "", "ptb.valid.txt is empty (0 bytes)"),
    ("test", "\n", "ptb.test.txt has 1 token(s) (<eos> included), too few to evaluate with data.eval_batch_size=1"),
    ("train", "a b\n\xe9t\xe9\n".encode("latin-1"), "ptb.train.txt is not UTF-8 text (byte 0xe9 on line 2)"),
    ("valid", bytes(range(128)) * 4, "ptb.valid.txt holds binary data (control byte 0x00 on line 1)"),
])
def test_ptb_broken_files_one_line(tmp_path, split, body, words):
    write_ptb(tmp_path, **{split: body})
    with pytest.raises(DataError) as e:
        data.check(ptb_cfg(tmp_path))
        data.build(ptb_cfg(tmp_path), seed=0)
    assert words in one_line(str(e.value))


def test_ptb_whole_lines_and_no_final_newline_are_fine(tmp_path):
    write_ptb(tmp_path, test="w1 w2\nw3")
    b = data.build(ptb_cfg(tmp_path), seed=0)
    assert b.meta["tokens"]["test"] == 5


def test_ptb_damaged_copies_of_the_published_file(tmp_path, monkeypatch):
    d = write_ptb(tmp_path, train=ptb_text(1200, 1))
    raw = publish(monkeypatch, ptb, "train", d / "ptb.train.txt")
    assert len(raw) > 2 * files.HEAD
    assert data.check(ptb_cfg(tmp_path)) is None and data.build(ptb_cfg(tmp_path), 0).meta["standard_files"] is False
    cut = raw[:len(raw) // 2]
    (d / "ptb.train.txt").write_bytes(cut[:cut.rindex(b"\n") + 3])   # mid-line: a download cut short
    with pytest.raises(DataError, match=r"ptb.train.txt is the first [\d,]+ of the [\d,]+ bytes of the published "
                                        r"ptb.train.txt: cut short"):
        data.check(ptb_cfg(tmp_path))
    (d / "ptb.train.txt").write_bytes(cut[:cut.rindex(b"\n") + 1])   # whole lines: `head -n` of it, the user's own
    data.check(ptb_cfg(tmp_path))
    (d / "ptb.train.txt").write_bytes(raw[:100] + b"X" + raw[101:])   # same size, one byte changed
    with pytest.raises(DataError) as e:
        data.check(ptb_cfg(tmp_path))
    assert "has the size of the published ptb.train.txt but other bytes" in one_line(str(e.value))


def test_digests_are_hashed_once_per_file_state(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    calls = []
    monkeypatch.setattr(files, "sha256_file", lambda path: calls.append(path) or "h")
    assert files.digest(p) == files.digest(p) == "h" and len(calls) == 1
    p.write_bytes(b"y" * 11)
    files.digest(p)
    assert len(calls) == 2


# ============================================================================ CIFAR-10
def c10_cfg(tmp_path, **kw):
    return OmegaConf.create({"name": "cifar10", "root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "cache"),
                             "batch_size": 4, "eval_batch_size": 4, "download": False, **kw})


def test_cifar_empty_archive_is_refused_before_training(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / c10.ARCHIVE).write_bytes(b"")
    args = ["model=mobilenet", "model.width=0.25", "data.batch_size=4", "data.download=false", "trainer.max_steps=1",
            "trainer.progress=false"]
    line = refused(prune_run(args, tmp_path / "data", tmp_path / "res"), tmp_path / "res")
    assert f"{c10.ARCHIVE} is empty (0 bytes)" in line and "put the published" in line


def test_cifar_cut_or_damaged_archive(tmp_path, monkeypatch):
    from test_vision_data import make_archive
    path = tmp_path / "root" / c10.ARCHIVE
    make_archive(path)
    raw = path.read_bytes()
    monkeypatch.setattr(c10, "ARCHIVE_SHA256", hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(c10, "ARCHIVE_SIZE", len(raw))
    monkeypatch.setattr(c10, "ARCHIVE_HEAD_SHA256", hashlib.sha256(raw[:files.HEAD]).hexdigest())
    data.check(c10_cfg(tmp_path))
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DataError) as e:
        data.check(c10_cfg(tmp_path))
    assert f"{c10.ARCHIVE} is the first" in one_line(str(e.value)) and "cut short" in str(e.value)
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(DataError, match="has the size of the published"):
        c10.prepare(tmp_path / "root", tmp_path / "cache")   # the script's way in is checked too


def _batch_file(path: Path, n=10):
    path.write_bytes(pickle.dumps({"data": np.zeros((n, 3072), dtype=np.uint8), "labels": [0] * n}))


@pytest.mark.parametrize("fault, words", [
    ("missing", "data_batch_1 is missing"),
    ("empty", "data_batch_1 is empty (0 bytes)"),
    ("cut", "data_batch_1 is not a whole pickle ("),
    ("records", "data_batch_1 has data of shape (10, 3072) and 10 labels, expected 10000 records of 3072 bytes"),
    ("modified", "data_batch_1 has md5 "),
])
def test_cifar_torchvision_batches_one_line(tmp_path, fault, words):
    d = tmp_path / "root" / c10.TV_DIR
    d.mkdir(parents=True)
    first = d / "data_batch_1"
    if fault == "empty":
        first.write_bytes(b"")
    elif fault == "cut":
        _batch_file(first)
        first.write_bytes(first.read_bytes()[:-40])
    elif fault == "records":
        _batch_file(first)
    elif fault == "modified":   # the right shape, other pixels: md5 alone tells
        _batch_file(first, n=10000)
    with pytest.raises(DataError) as e:
        data.build(c10_cfg(tmp_path), seed=0)
    line = one_line(str(e.value))
    assert line.startswith(f"CIFAR-10 batch {d / 'data_batch_1'}") and words in line
    assert "data.download=true" in line


def test_cifar_unreadable_cache_without_source_says_so(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / c10.TV_CACHE).write_bytes(b"PK\x03\x04 not a whole torch file")
    with pytest.raises(DataError) as e:
        data.build(c10_cfg(tmp_path), seed=0)
    assert f"{tmp_path / 'cache' / c10.TV_CACHE} is unreadable (" in one_line(str(e.value))


# ============================================================================ Multi30k
def m30k_files(root: Path, n=40) -> Path:
    rng = random.Random(0)
    d = root / "multi30k"
    d.mkdir(parents=True, exist_ok=True)
    for split, stem in multi30k.SPLITS.items():
        for lang in multi30k.LANGS:
            lines = [" ".join(rng.choice(WORDS) for _ in range(5)) + "." for _ in range(n if split == "train" else 8)]
            with gzip.open(d / f"{stem}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    return d


def m30k_cfg(tmp_path, **kw):
    return OmegaConf.create({"name": "multi30k", "root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "cache"),
                             "download": False, "direction": "de-en", "vocab_size": 60, "batch_size": 4,
                             "eval_batch_size": 4, "pool": 2, **kw})


def test_multi30k_cut_gz_is_refused_before_training(tmp_path):
    d = m30k_files(tmp_path / "data", n=200)
    raw = (d / "val.en.gz").read_bytes()
    (d / "val.en.gz").write_bytes(raw[: len(raw) // 2])
    args = ["model=gnmt", "data=multi30k", "model.layers=2", "model.units=16", "data.vocab_size=60",
            "data.batch_size=8", "data.eval_batch_size=8", "data.download=false", "trainer.max_steps=1",
            "trainer.progress=false"]
    line = refused(prune_run(args, tmp_path / "data", tmp_path / "res"), tmp_path / "res")
    assert "val.en.gz: its gzip stream ends early (cut short)" in line


@pytest.fixture
def fresh_m30k():
    multi30k._MEMO.clear()
    yield
    multi30k._MEMO.clear()


@pytest.mark.parametrize("fault, words", [
    ("empty", "test_2016_flickr.de.gz is empty (0 bytes)"),
    ("garbage", "test_2016_flickr.de.gz: Not a gzipped file"),
    ("latin1", "test_2016_flickr.de.gz: not UTF-8 text"),
    ("no lines", "test_2016_flickr.de.gz holds no sentences"),
    ("crc", "test_2016_flickr.de.gz: CRC check failed"),
])
def test_multi30k_broken_files_one_line(tmp_path, fresh_m30k, fault, words):
    d = m30k_files(tmp_path / "root")
    f = d / "test_2016_flickr.de.gz"
    raw = f.read_bytes()
    body = {"empty": b"", "garbage": bytes(range(256)), "latin1": gzip.compress("Stra\xdfe\n".encode("latin-1")),
            "no lines": gzip.compress(b""), "crc": raw[:-8] + bytes(4) + raw[-4:]}[fault]
    f.write_bytes(body)
    with pytest.raises(DataError) as e:
        data.check(m30k_cfg(tmp_path))
        data.build(m30k_cfg(tmp_path), seed=0)
    line = one_line(str(e.value))
    assert words in line and "data.download=true" in line


def test_multi30k_cut_copy_of_the_published_file(tmp_path, monkeypatch, fresh_m30k):
    d = m30k_files(tmp_path / "root", n=2000)
    raw = publish(monkeypatch, multi30k, "train.de.gz", d / "train.de.gz")
    assert len(raw) > files.HEAD
    data.check(m30k_cfg(tmp_path))
    (d / "train.de.gz").write_bytes(raw[: files.HEAD + 10])
    with pytest.raises(DataError, match="train.de.gz is the first 4,106 of the"):
        data.check(m30k_cfg(tmp_path))


# ============================================================================ the report
def summary(run_id, **kw) -> dict:
    d = dict(schema_version=1, exp_name="lm", run_id=run_id, family="ptb_lstm", model="ptb_lstm", size="small",
             dataset="ptb", synthetic=False, pruning="gradual", scheme="uniform", steps=100, epochs=1.0,
             wall_time_s=1.0, seed=0, status="finished", params_total=1_000_000, bytes_dense=4e6,
             bytes_bitmask=1.25e5, bytes_csr=1e5, bytes_csr_exact=1e5, lr=1.0)
    d.update(kw)
    if d["target_sparsity"] == 0:
        d["pruning"] = "none"
    d.setdefault("achieved_sparsity", d["target_sparsity"])
    d.setdefault("infer_macs", d["params_nnz"])   # MACs a token: the LSTM's nonzeros, near enough
    d.setdefault("macs_unit", "token")
    d.setdefault("model_size_mb", 4 * d["params_nnz"] / 1e6)
    return d


def metrics(n=5, last="") -> str:
    rows = ["step,epoch,split,metric,value"]
    rows += [f"{i * 10},0,valid,perplexity,{300 - i}" for i in range(n)]
    return "\n".join(rows) + "\n" + last


def write_run(root: Path, rel: str, summ: dict | str | None, metrics_text: str | None = None) -> Path:
    d = root / "runs" / rel
    d.mkdir(parents=True)
    if summ is not None:
        (d / "summary.json").write_text(summ if isinstance(summ, str) else json.dumps(summ))
    if metrics_text is not None:
        (d / "metrics.csv").write_text(metrics_text)
    return d


def lm_study(root: Path) -> None:
    """hidden 96 dense and hidden 384 @ 90%, 3 seeds each; two seeds of the sparse point diverged."""
    for seed, ppl in enumerate((200.0, 210.0, 220.0)):
        write_run(root, f"lm/h96,seed={seed}", summary(f"h96,seed={seed}", hidden=96, target_sparsity=0.0,
                                                       params_nnz=400_000, perplexity=ppl, seed=seed), metrics())
    write_run(root, "lm/h384,sparsity=0.9,seed=0",
              summary("h384,sparsity=0.9,seed=0", hidden=384, target_sparsity=0.9, params_nnz=350_000,
                      perplexity=190.0, seed=0), metrics())
    for seed, step, loss in ((1, 120, None), (2, 40, 12.5)):
        write_run(root, f"lm/h384,sparsity=0.9,seed={seed}",
                  summary(f"h384,sparsity=0.9,seed={seed}", hidden=384, target_sparsity=0.9, params_nnz=350_000,
                          perplexity=None, val_perplexity=None, seed=seed, steps=step, status="diverged",
                          diverged_step=step, diverged_loss=loss,
                          diverged_reason=f"loss {'nan' if loss is None else 'rose 10x'} at step {step}"),
                  metrics(3))


def test_report_keeps_diverged_runs_out_of_means_and_names_them(tmp_path, capsys):
    lm_study(tmp_path)
    assert cli.main(["--results-dir", str(tmp_path), "--paper-dir", str(PAPER)]) == 0
    assert "4 finished, 0 incomplete, 0 skipped, 2 diverged" in capsys.readouterr().out
    out = tmp_path / "report"
    runs = pd.read_csv(out / "runs.csv").set_index("run")
    assert len(runs) == 6
    assert (runs["status"] == "diverged").sum() == 2 and (runs["status"] == "finished").sum() == 4
    d = runs.loc["lm/h384,sparsity=0.9,seed=1"]
    assert (d["status"], d["diverged_step"], d["diverged_reason"]) == ("diverged", 120, "loss nan at step 120")
    assert math.isnan(d["diverged_loss"]) and runs.loc["lm/h384,sparsity=0.9,seed=2", "diverged_loss"] == 12.5
    assert runs.loc["lm/h96,seed=0", ["diverged_step", "diverged_loss", "diverged_reason"]].isna().all()
    line = next(x for x in (out / "runs.csv").read_text().splitlines() if x.startswith('"lm/h384,sparsity=0.9,seed=1",'))
    assert line.startswith('"lm/h384,sparsity=0.9,seed=1",diverged,')
    assert line.endswith(",120,,loss nan at step 120")        # a step is an integer, a null loss an empty cell
    assert d["point_id"] == runs.loc["lm/h384,sparsity=0.9,seed=0", "point_id"]   # the point it belonged to
    pts = pd.read_csv(out / "points.csv").set_index("hidden")
    assert (pts.at[384.0, "n_seeds"], pts.at[384.0, "perplexity_mean"], pts.at[384.0, "n_diverged"]) == (1, 190.0, 2)
    assert pts.at[384.0, "diverged_runs"] == "lm/h384,sparsity=0.9,seed=1;lm/h384,sparsity=0.9,seed=2"
    pair = pd.read_csv(out / "tables" / "pairing.csv").iloc[0]
    assert (pair["dense by NNZ"], pair["sparse advantage by NNZ"]) == ("hidden=96", 20.0)
    assert pair["verdict at equal steps"] == "n/a (1 seed)"     # one finished seed left
    md = (out / "index.md").read_text()
    assert ("**2 runs diverged:** `lm/h384,sparsity=0.9,seed=1` at step 120, `lm/h384,sparsity=0.9,seed=2` at step 40."
            in md)
    assert "| lm/h384,sparsity=0.9,seed=1 | 120 | not finite | loss nan at step 120 |" in md
    assert "| lm/h384,sparsity=0.9,seed=2 | 40 | 12.5 | loss rose 10x at step 40 |" in md
    assert "red x at the top: 2 diverged run(s)" in md
    table = study_table(tmp_path / "runs" / "lm")
    assert "diverged at step 120" in table and "diverged at step 40" in table


def test_figure_marks_diverged_runs_at_the_top(tmp_path, monkeypatch):
    lm_study(tmp_path)
    coll = collect_mod.collect(tmp_path)
    drawn, save = {}, figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, name: drawn.setdefault(name, fig) and save(fig, out_dir, name))
    rep = cli.make_report(tmp_path, tmp_path / "report", paper_dir=PAPER)
    ax = drawn["quality_vs_nnz_ptb_lstm_ptb"].axes[0]
    marks = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [350_000.0, 350_000.0]
    assert list(marks[0].get_ydata()) == [0.97, 0.97] and marks[0].get_label() == "diverged (no quality)"
    assert ax.get_ylim()[1] < 300      # the marks do not stretch the quality axis
    macs = drawn["quality_vs_infer_macs_ptb_lstm_ptb"].axes[0]
    assert [list(ln.get_xdata()) for ln in macs.lines if ln.get_marker() == "x"] == [[350_000.0, 350_000.0]]
    assert len(coll.runs) == 4 and len(coll.diverged) == 2 and rep["n_diverged"] == 2


def test_report_over_broken_and_vanishing_run_folders(tmp_path, monkeypatch, capsys):
    lm_study(tmp_path)
    write_run(tmp_path, "lm/cut", summary("cut", hidden=48, target_sparsity=0.0, params_nnz=100_000,
                                          perplexity=400.0), metrics(5, last="50,0,valid,perpl"))
    write_run(tmp_path, "lm/empty", "", metrics())
    write_run(tmp_path, "lm/notjson", "{'family': ptb_lstm", metrics())
    write_run(tmp_path, "lm/gone", summary("gone", hidden=48, target_sparsity=0.0, params_nnz=100_000,
                                           perplexity=401.0), metrics())
    walk = collect_mod.find_run_dirs

    def vanishing(top):   # the folder is listed, then deleted before its files are opened
        for root, names in walk(top):
            if root.endswith("gone"):
                shutil.rmtree(root)
            yield root, names
    monkeypatch.setattr(collect_mod, "find_run_dirs", vanishing)
    assert cli.main(["--results-dir", str(tmp_path), "--paper-dir", str(PAPER)]) == 0
    assert "5 finished, 0 incomplete, 4 skipped, 2 diverged" in capsys.readouterr().out
    skipped = dict(pd.read_csv(tmp_path / "report" / "skipped.csv").itertuples(index=False, name=None))
    assert skipped == {"lm/cut/metrics.csv": collect_mod.PARTIAL,
                       "lm/empty/summary.json": "empty file (0 bytes)",
                       "lm/notjson/summary.json": "invalid JSON: Expecting property name enclosed in double quotes: "
                                                  "line 1 column 2 (char 1)",
                       "lm/gone/summary.json": "vanished while the report read it (deleted or moved)"}
    md = (tmp_path / "report" / "index.md").read_text()
    for file, reason in skipped.items():
        assert f"| {file} | {reason} |" in md


def test_report_exit_status_1_when_nothing_could_be_read(tmp_path, capsys):
    write_run(tmp_path, "lm/empty", "")
    write_run(tmp_path, "lm/half", '{"family": "ptb_lstm", "params_nnz": ')
    assert cli.main(["--results-dir", str(tmp_path)]) == 1
    cap = capsys.readouterr()
    assert one_line(cap.err) == (f"prune-report: error: none of the 2 run folder(s) under {tmp_path} could be read; "
                                 f"the reasons are in {tmp_path / 'report' / 'skipped.csv'}")
    assert len(pd.read_csv(tmp_path / "report" / "skipped.csv")) == 2
    assert cli.main(["--results-dir", str(tmp_path / "report")]) == 0   # no run folders at all: nothing failed


def test_report_with_a_perplexity_of_inf(tmp_path, capsys):
    """A finished run that evaluated to inf (json's Infinity, metrics.csv's inf) breaks nothing."""
    lm_study(tmp_path)
    write_run(tmp_path, "lm/h48,seed=0", summary("h48,seed=0", hidden=48, target_sparsity=0.0, params_nnz=100_000,
                                                 perplexity=math.inf, val_perplexity=math.inf),
              metrics(3, last="30,0,valid,perplexity,inf\n40,0,train,loss,nan\n"))
    assert "Infinity" in (tmp_path / "runs" / "lm" / "h48,seed=0" / "summary.json").read_text()
    assert cli.main(["--results-dir", str(tmp_path), "--paper-dir", str(PAPER), "--run", "lm/h48,seed=0"]) == 0
    out = tmp_path / "report"
    t = pd.read_csv(out / "tables" / "table_ptb_lstm.csv").set_index("size")
    assert t.at["hidden=48", "perplexity"] == math.inf
    md = (out / "index.md").read_text()
    assert "| ptb | hidden=48 | dense | 0% | 100K |  | inf (n=1) |" in (out / "tables" / "table_ptb_lstm.md").read_text()
    assert "triangle at the top: 1 configuration(s) whose quality is not finite (inf)" in md
    assert "2 value(s) that are not finite (inf or NaN) are gaps in the curves" in md
    assert (out / "figures" / "fig2_schedule_and_quality.png").stat().st_size > 1000
    assert "inf" in study_table(tmp_path / "runs" / "lm")
