"""The per-layer sparsity figure: pruning runs draw final sparsity; runs whose rule moves
connections at constant sparsity (RigL, SET) also draw how many it moved."""
from prune_cli.report import figures

HEADER = "step,layer,numel,nnz,target_sparsity,sparsity,dropped,regrown\n"


def test_dynamic_run_draws_the_moves(tmp_path):
    (tmp_path / "sparsity.csv").write_text(
        HEADER
        + "0,lstm.w_ih,100,10,0.9,0.9,0,0\n0,lstm.w_hh,200,40,0.8,0.8,0,0\n"
        + "100,lstm.w_ih,100,10,0.9,0.9,3,3\n100,lstm.w_hh,200,40,0.8,0.8,12,12\n"
        + "200,lstm.w_ih,100,10,0.9,0.9,2,2\n200,lstm.w_hh,200,40,0.8,0.8,5,5\n")
    last, moved = figures.read_layer_rows(tmp_path / "sparsity.csv")
    assert last == {"lstm.w_ih": (200, 0.9, 0.9, 10.0), "lstm.w_hh": (200, 0.8, 0.8, 40.0)}
    assert moved == {"lstm.w_ih": 5, "lstm.w_hh": 17}
    info = figures.layer_sparsity(tmp_path, "rigl_run", False, tmp_path / "figs")
    assert "moved connections" in info.caption and "(22 in all)" in info.caption
    assert (tmp_path / "figs" / "layer_sparsity.png").read_bytes()[:4] == b"\x89PNG"


def test_pruning_run_and_old_files_draw_sparsity_only(tmp_path):
    (tmp_path / "sparsity.csv").write_text(   # a file from before dropped,regrown, last row cut
        "step,layer,numel,nnz,target_sparsity,sparsity\n"
        "100,fc.weight,100,50,0.5,0.5\n200,fc.weight,100,20,0.8,0.8\n300,fc.wei")
    last, moved = figures.read_layer_rows(tmp_path / "sparsity.csv")
    assert last == {"fc.weight": (200, 0.8, 0.8, 20.0)} and moved == {"fc.weight": 0}
    info = figures.layer_sparsity(tmp_path, "gradual", False, tmp_path / "figs")
    assert "moved" not in info.caption and "step 200" in info.caption
