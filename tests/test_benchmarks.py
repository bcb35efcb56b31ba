"""Smoke runs of the benchmark scripts at tiny shapes (no timing is asserted)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_speed_prints_the_ratio_last(capsys):
    rows = _load("fit_speed").main(["--n", "300", "--d", "16", "--c", "7", "--epochs", "2",
                                    "--repeats", "1", "--others", "kd_lp", "logconf", "clip_adapter"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 and {"bound", "cpl", "cpl_val", "cpl_autograd", "kd_lp", "logconf", "clip_adapter",
                              "clip_adapter_autograd"} <= set(rows[0])
    assert all(rows[0][k] > 0 for k in ("bound", "cpl", "kd_lp"))
    assert out[-1].startswith("cpl / bound: worst ")


def test_scaling_reads_memory_maps_and_cleans_up(tmp_path, capsys):
    folder = tmp_path / "scaling"
    rows = _load("scaling").main(["--n", "600", "--c", "5", "--d", "8", "--batch-size", "64",
                                  "--dir", str(folder)])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 and rows[0]["steps"] == 10 and rows[0]["peak_anon_mb"] >= 0
    assert out[-1].startswith("peak memory / one batch of features")
    assert not folder.exists()


def test_reuse_runs_the_demo_then_the_sweep_and_prints_the_ratio_last(capsys):
    """One run (real, full, two methods): the sweep into another runs dir copies it from the cache."""
    ratios = _load("reuse").main(["--set", "grid.domain=[real]", "--set", "grid.strong=[full]",
                                  "--set", "methods=[zero_shot,cpl]"])
    out = capsys.readouterr().out.strip().splitlines()
    assert list(ratios) == ["demo then sweep"] and 0 < ratios["demo then sweep"] < 1
    assert "1 ran (1 copied from the cache's finished runs)" in out[1] and "'runs': 1}" in out[1]
    assert out[-1].startswith("second / first: ") and out[-1].endswith("(demo then sweep)")
