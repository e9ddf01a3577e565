"""prune-export and its loader: the documented layout, exact round trips, sizes, bad input."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import safe_open, save_file

from prune_cli import export, models
from prune_cli.pruning import ConstantSchedule, Pruner, counted_parameters, storage_report

FAMILIES = {
    # name: (model config, the dataset meta the builder reads, prune patterns, an input)
    "mobilenet": ({"name": "mobilenet", "width": 0.25, "num_classes": None, "dropout": 0.0},
                  {"num_classes": 10, "image_size": 32}, ["blocks.*.pw.weight", "fc.weight"],
                  lambda g: torch.randn(2, 3, 32, 32, generator=g)),
    "ptb_lstm": ({"name": "ptb_lstm", "hidden": 12, "layers": 2, "dropout": 0.0, "init_range": 0.1},
                 {"vocab_size": 37}, ["embedding.weight", "lstm.weight_*", "decoder.weight"],
                 lambda g: torch.randint(0, 37, (2, 5), generator=g)),
}


def make_run(root: Path, family: str, sparsity: float = 0.7, seed: int = 0, channels_last: bool = True) -> Path:
    """A finished run folder as prune-run leaves it, without training: pruned weights, trained BN stats."""
    cfg, meta, prune, make_input = FAMILIES[family]
    torch.manual_seed(seed)
    model = models.build(OmegaConf.create(cfg), meta)
    if family == "mobilenet":
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()(make_input(torch.Generator().manual_seed(seed)))  # running stats move off 0/1
    pruner = Pruner(model, ConstantSchedule(sparsity), prune) if sparsity > 0 else None
    if pruner:
        pruner.step(0)
    masks = pruner.masks if pruner else {}
    run = root / f"{family}_{sparsity}_{seed}"
    run.mkdir(parents=True)
    config = {"model": {**cfg, "prune": prune}, "sparsity": sparsity, "seed": seed}
    torch.save({"model": model.state_dict(), "pruner": pruner.state_dict() if pruner else {"masks": {}},
                "config": config}, run / "checkpoint.pt")
    report = storage_report(model, masks)
    (run / "summary.json").write_text(json.dumps({"run_id": run.name, "family": family, "target_sparsity": sparsity,
                                                  "model_meta": meta, **report.as_dict()}))
    return run


def checkpoint(run):
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    return state["model"], {n: m for n, m in state["pruner"]["masks"].items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {f: make_run(root, f) for f in FAMILIES}


# -- the layout, bit for bit ---------------------------------------------------------------
def test_hand_worked_bitmask_and_csr_layout(tmp_path):
    w = torch.tensor([[1.5, 0.0, -2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, -4.0]])
    keep = w != 0
    state = {"w": w, "b": torch.tensor([0.25, 0.5]), "n": torch.tensor(7)}
    bm = export.encode(state, {"w": keep}, "bitmask", "float32")
    assert set(bm) == {"w.values", "w.bitmask", "b", "n"}
    assert bm["w.values"].tolist() == [1.5, -2.0, 3.0, -4.0]
    # bits 0..7 = 1,0,1,1,0,0,0,0 -> 1 + 4 + 8; bits 8, 9 = 0, 1 -> 2 (LSB first, zero padded)
    assert bm["w.bitmask"].dtype == torch.uint8 and bm["w.bitmask"].tolist() == [13, 2]
    assert bm["w.bitmask"].tolist() == np.packbits(keep.reshape(-1).numpy(), bitorder="little").tolist()
    csr = export.encode(state, {"w": keep}, "csr", "float32")
    assert set(csr) == {"w.values", "w.crow_indices", "w.col_indices", "b", "n"}
    assert csr["w.crow_indices"].dtype == csr["w.col_indices"].dtype == torch.int32
    assert csr["w.crow_indices"].tolist() == [0, 3, 4] and csr["w.col_indices"].tolist() == [0, 2, 3, 4]
    q = export.encode(state, {"w": keep}, "bitmask", "int8")
    assert q["w.scales"].dtype == torch.float32 and q["w.scales"].tolist() == pytest.approx([3 / 127, 4 / 127])
    assert q["w.values"].dtype == torch.int8 and q["w.values"].tolist() == [64, -85, 127, -127]  # 1.5*127/3 = 63.5 -> 64
    assert q["b"].dtype == torch.float32  # dense-stored tensors stay float32 under int8
    half = export.encode(state, {"w": keep}, "csr", "float16")
    assert half["w.values"].dtype == half["b"].dtype == torch.float16 and half["n"].dtype == torch.int64
    dense = export.encode(state, {"w": keep}, "dense", "float32")
    assert set(dense) == {"w", "b", "n"} and torch.equal(dense["w"], w)


def test_views_into_one_buffer_are_written(tmp_path):
    # cuDNN keeps an LSTM's weights as views into one flat buffer, and a checkpoint keeps them so.
    flat = torch.arange(12.0)
    state = {"a": flat[:8].view(2, 4), "b": flat[8:]}
    tensors = export.encode(state, {"a": torch.ones(2, 4, dtype=torch.bool)}, "bitmask", "float32")
    save_file(tensors, str(tmp_path / "x.safetensors"))
    assert torch.equal(tensors["b"], flat[8:])


def test_csr_matches_torch_and_a_4d_tensor_is_viewed_as_2d():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=g)
    keep = torch.rand(w.shape, generator=g) > 0.6
    w = w * keep
    t = export.encode({"c": w.to(memory_format=torch.channels_last)}, {"c": keep}, "csr", "float32")
    ref = w.reshape(6, -1).to_sparse_csr()
    assert torch.equal(t["c.crow_indices"].long(), ref.crow_indices())
    assert torch.equal(t["c.col_indices"].long(), ref.col_indices())
    assert torch.equal(t["c.values"], ref.values())


@pytest.mark.parametrize("fmt", ["csr", "bitmask"])
def test_csr_layout_loads_int32_indices(runs, tmp_path, fmt):
    """The loader keeps the file's int32 indices (MKL's; int64 ones would be converted on every
    product), for csr files and for the CSR built from a bitmask, and the matrices are the dense ones."""
    path = tmp_path / f"m.{fmt}.safetensors"
    export.export_run(runs["ptb_lstm"], path, fmt, "float32", record=False)
    sparse, dense = export.load(path, layout="csr"), export.load(path, layout="dense")
    assert sparse.shapes
    for name in sparse.shapes:
        t = sparse.state_dict[name]
        assert t.layout == torch.sparse_csr
        assert t.crow_indices().dtype == t.col_indices().dtype == torch.int32
        assert torch.equal(t.to_dense(), dense.state_dict[name].reshape(t.shape))


def test_a_file_with_int64_indices_still_loads(runs, tmp_path):
    """Format version 1 says int32; a file whose indices were written wider (by another writer)
    loads the same, narrowed once at load time."""
    good = tmp_path / "good.safetensors"
    export.export_run(runs["ptb_lstm"], good, "csr", "float32", record=False)
    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
        tensors = {k: (f.get_tensor(k).long() if k.endswith("_indices") else f.get_tensor(k)) for k in f.keys()}
    wide = tmp_path / "wide.safetensors"
    save_file(tensors, str(wide), metadata=meta)
    a, b = export.load(good, layout="csr"), export.load(wide, layout="csr")
    for name in a.shapes:
        assert b.state_dict[name].crow_indices().dtype == torch.int32
        assert torch.equal(a.state_dict[name].to_dense(), b.state_dict[name].to_dense())
    assert all(torch.equal(export.load(wide).state_dict[n], export.load(good).state_dict[n]) for n in a.state_dict)


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", export.FORMATS)
def test_float32_round_trip_is_exact_and_outputs_identical(runs, tmp_path, family, fmt):
    run = runs[family]
    weights, masks = checkpoint(run)
    out = tmp_path / f"{fmt}.safetensors"
    export.export_run(run, out, fmt, "float32", record=False)
    got = export.load(out)
    assert got.format == fmt and got.dtype == "float32" and got.config["model"]["name"] == family
    assert got.shapes == ({n: list(weights[n].shape) for n in masks} if fmt != "dense" else {})
    assert list(got.state_dict) == sorted(got.state_dict) and set(got.state_dict) == set(weights)
    for n, t in weights.items():
        assert got.state_dict[n].dtype == t.dtype and torch.equal(got.state_dict[n], t), n
    for n, m in masks.items():  # the pruned weights really are zero, the kept ones as trained
        assert torch.equal(got.state_dict[n] != 0, m.bool() & (weights[n] != 0))

    cfg, meta, _, make_input = FAMILIES[family]
    reference = models.build(OmegaConf.create(cfg), meta)
    reference.load_state_dict(weights)
    x = make_input(torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = reference.eval()(x), export.build_model(got)(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.equal(a, b)

    sparse = export.load(out, layout="csr")
    for n, t in weights.items():
        s = sparse.state_dict[n]
        if fmt != "dense" and n in masks:
            assert s.layout == torch.sparse_csr and s.shape == (t.shape[0], t.numel() // t.shape[0])
            assert s.values().dtype == torch.float32 and s.values().numel() == int(masks[n].sum())
            assert torch.equal(s.to_dense().view(t.shape), t)
        else:
            assert s.layout == torch.strided and torch.equal(s, t)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", export.FORMATS)
def test_float16_round_trip_is_float16_rounding_exactly(runs, tmp_path, family, fmt):
    weights, masks = checkpoint(runs[family])
    out = tmp_path / "h.safetensors"
    export.export_run(runs[family], out, fmt, "float16", record=False)
    got = export.load(out).state_dict
    for n, t in weights.items():
        want = t.half().float() if t.is_floating_point() else t
        assert got[n].dtype == want.dtype and torch.equal(got[n], want), n


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", ["bitmask", "csr"])
def test_int8_within_half_a_step_per_element(runs, tmp_path, family, fmt):
    weights, masks = checkpoint(runs[family])
    out = tmp_path / "q.safetensors"
    export.export_run(runs[family], out, fmt, "int8", record=False)
    got = export.load(out)
    with safe_open(str(out), "pt") as f:
        scales = {n: f.get_tensor(f"{n}.scales") for n in masks}
    for n, t in weights.items():
        if n not in masks:
            assert torch.equal(got.state_dict[n], t), n  # dense-stored: float32, exact
            continue
        w2, d2 = t.reshape(t.shape[0], -1), got.state_dict[n].reshape(t.shape[0], -1)
        assert torch.equal(scales[n], w2.abs().amax(dim=1) / 127)
        err = (d2 - w2).abs()  # half a step, plus float32's rounding of q * scale
        assert (err <= scales[n][:, None] / 2 + 2 * torch.finfo(torch.float32).eps * w2.abs()).all(), n
        assert torch.equal(got.state_dict[n][~masks[n].bool()], torch.zeros(int((~masks[n].bool()).sum())))
        csr = export.load(out, layout="csr").state_dict[n]
        assert torch.equal(csr.to_dense(), d2)


def test_dense_run_exports_every_tensor_dense(tmp_path):
    run = make_run(tmp_path, "ptb_lstm", sparsity=0.0)
    weights, _ = checkpoint(run)
    rec = export.export_run(run, tmp_path / "d.safetensors", "bitmask", "int8", record=False)
    got = export.load(tmp_path / "d.safetensors")
    assert got.shapes == {} and all(torch.equal(got.state_dict[n], t) for n, t in weights.items())
    assert rec["predicted_bytes"] == 4 * sum(t.numel() for t in weights.values())


# -- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_file_size_is_the_storage_accounting_plus_the_header(runs, tmp_path, family):
    run = runs[family]
    weights, masks = checkpoint(run)
    cfg, meta, _, _ = FAMILIES[family]
    model = models.build(OmegaConf.create(cfg), meta)
    model.load_state_dict(weights)
    report = storage_report(model, masks)
    counted = counted_parameters(model)
    uncounted = sum(t.numel() * t.element_size() for n, t in weights.items() if n not in counted)  # BN, buffers
    nnz = {n: int(m.sum()) for n, m in masks.items()}
    rows = {n: weights[n].shape[0] for n in masks}
    bits = sum(math.ceil(weights[n].numel() / 8) for n in masks)
    assert 0 <= bits - report.bytes_bitmask < len(masks)  # one padded byte a tensor at most
    unpruned = report.params_nnz - sum(nnz.values())
    want = {
        ("dense", "float32"): report.bytes_dense + uncounted,
        ("dense", "float16"): (report.bytes_dense + uncounted) // 2 if family == "ptb_lstm" else None,
        ("bitmask", "float32"): 4 * report.params_nnz + bits + uncounted,
        ("csr", "float32"): 4 * report.params_nnz + sum(4 * nnz[n] + 4 * (rows[n] + 1) for n in masks) + uncounted,
        ("bitmask", "int8"): 4 * unpruned + sum(nnz[n] + 4 * rows[n] for n in masks) + bits + uncounted,
        ("csr", "int8"): 4 * unpruned + sum(nnz[n] + 4 * rows[n] + 4 * nnz[n] + 4 * (rows[n] + 1) for n in masks) + uncounted,
    }
    for (fmt, dtype), predicted in want.items():
        out = tmp_path / f"{fmt}-{dtype}.safetensors"
        rec = export.export_run(run, out, fmt, dtype)
        if predicted is not None:
            assert rec["predicted_bytes"] == predicted, (fmt, dtype)
        assert rec["bytes"] == out.stat().st_size == rec["predicted_bytes"] + rec["header_bytes"], (fmt, dtype)
        assert rec["header_bytes"] < 4096 + len(json.dumps(json.loads((run / "summary.json").read_text()))) + 120 * len(weights) * 2
    records = json.loads((run / "exports.json").read_text())
    assert {(e["format"], e["dtype"]) for e in records} == set(want)  # one record per file, the latest
    assert all(e["bytes"] == Path(e["file"]).stat().st_size for e in records)
    payload = {(e["format"], e["dtype"]): e["predicted_bytes"] for e in records}  # tiny models: headers dominate files
    assert payload[("bitmask", "float32")] < 0.45 * payload[("dense", "float32")]  # 70% sparse: really small
    assert payload[("bitmask", "int8")] < payload[("bitmask", "float32")]
    export.export_run(run, tmp_path / "dense-float32.safetensors", "dense", "float32")  # again: replaced
    assert len(json.loads((run / "exports.json").read_text())) == len(want)


# -- bad input -----------------------------------------------------------------------------
def cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        export.main([str(a) for a in args])
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case, fragment", [
    ("missing", "does not exist"),
    ("unfinished", "has not finished (no summary.json)"),
    ("format", "invalid choice: 'coo'"),
    ("dtype", "invalid choice: 'int4'"),
    ("dense_int8", "--format dense has none"),
    ("no_dir", "does not exist; create it"),
    ("dir", "is a directory"),
    ("read_only", "cannot be written"),
])
def test_bad_input_one_line_exit_2_nothing_written(runs, tmp_path, capsys, case, fragment):
    run = runs["ptb_lstm"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.safetensors"
    args = {
        "missing": [tmp_path / "nope", "--format", "csr", "-o", out],
        "unfinished": [unfinished, "--format", "csr", "-o", out],
        "format": [run, "--format", "coo", "-o", out],
        "dtype": [run, "--format", "csr", "--dtype", "int4", "-o", out],
        "dense_int8": [run, "--format", "dense", "--dtype", "int8", "-o", out],
        "no_dir": [run, "--format", "csr", "-o", out_dir / "sub" / "m.safetensors"],
        "dir": [run, "--format", "csr", "-o", out_dir],
        "read_only": [run, "--format", "csr", "-o", out],
    }[case]
    before = sorted(p.name for p in run.iterdir())
    if case == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere")
        out_dir.chmod(0o500)
    try:
        code, err = cli(args, capsys)
    finally:
        out_dir.chmod(0o700)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prune-export: error: ") and fragment in lines[0], err
    assert list(out_dir.iterdir()) == [] and sorted(p.name for p in run.iterdir()) == before


def test_read_only_output_refused_without_root(runs, tmp_path, capsys, monkeypatch):
    # The same refusal as above, where the test runs as root (which can write anywhere).
    out = tmp_path / "m.safetensors"
    monkeypatch.setattr(export.os, "access", lambda path, mode: False)
    code, err = cli([runs["ptb_lstm"], "--format", "csr", "-o", out], capsys)
    assert code == 2 and "cannot be written; choose another -o" in err and not out.exists()


def test_cli_writes_and_says_so(runs, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    export.main([str(runs["ptb_lstm"]), "--format", "bitmask", "--dtype", "int8", "-o", str(out)])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: {out.stat().st_size:,} bytes (bitmask, int8;")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


@pytest.mark.parametrize("case, fragment", [
    ("missing", "no such file"),
    ("garbage", "cannot be read as a prune-export file"),
    ("truncated", "cannot be read as a prune-export file"),
    ("foreign", "was not written by prune-export"),
    ("version", "has format version 2"),
])
def test_loader_refuses_bad_files_in_one_line(runs, tmp_path, case, fragment):
    good = tmp_path / "good.safetensors"
    export.export_run(runs["ptb_lstm"], good, "csr", "float32", record=False)
    path = tmp_path / "bad.safetensors"
    if case == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[:-100])
    elif case == "foreign":
        save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "csr"})
    elif case == "version":
        with safe_open(str(good), "pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        save_file(tensors, str(path), metadata={**meta, "format_version": "2"})
    with pytest.raises(export.ExportError) as e:
        export.load(path)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# -- end to end ----------------------------------------------------------------------------
@pytest.mark.slow
def test_prune_run_then_prune_export_console_script(tmp_path):
    from test_run_e2e import TINY, prune_run, run_dir

    root = tmp_path / "data"
    (root / "ptb").mkdir(parents=True)
    words = [f"w{i}" for i in range(30)]
    for split, n in (("train", 80), ("valid", 10), ("test", 10)):
        (root / "ptb" / f"ptb.{split}.txt").write_text("\n".join(" ".join(words[(i * 7 + j) % 30] for j in range(8)) for i in range(n)) + "\n")
    res = prune_run(TINY + ["sparsity=0.75", "trainer.epochs=1", "pruning.frequency=1"], root, tmp_path)
    assert res.returncode == 0, res.stderr
    run = run_dir(tmp_path)
    out = tmp_path / "m.safetensors"
    exe = Path(sys.executable).parent / "prune-export"
    done = subprocess.run([str(exe), str(run), "--format", "csr", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    got = export.load(out)
    assert all(torch.equal(got.state_dict[n], t) for n, t in state["model"].items())
    assert got.config == state["config"] and json.loads(got.metadata["summary"])["run_id"] == run.name
    assert json.loads(got.metadata["model_meta"]) == {"vocab_size": 32}  # 30 words, <eos>, <unk>
    rec = json.loads((run / "exports.json").read_text())
    assert rec[0]["bytes"] == out.stat().st_size
