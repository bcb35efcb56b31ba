"""End to end: ``w2sclip demo --quick`` through the real CLI on the built-in benchmark."""

import csv
import json

from typer.testing import CliRunner

from w2sclip.cli import app
from w2sclip.methods import METHODS

REQUIRED = {"dataset", "domain", "strong", "weak", "method", "seed", "accuracy", "pgr", "agreement"}


def test_demo_quick_is_the_builtin_preset_through_sweep_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, cache = tmp_path / "out", tmp_path / "cache"
    # a subset of the preset's methods keeps this test short; --quick itself is checked below
    methods = "methods=[zero_shot,cpl,kd_lp]"
    res = CliRunner().invoke(app, ["demo", "--quick", "--quiet", "--out", str(out), "--cache-dir", str(cache),
                                   "--set", methods])
    assert res.exit_code == 0, res.output
    assert "| method |" in res.output and "Regime" in res.output and "time per stage" in res.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert REQUIRED <= set(rows[0])
    domains = {"real", "clipart", "painting", "sketch", "quickdraw", "infograph"}
    assert {r["domain"] for r in rows} == domains
    assert {r["strong"] for r in rows} == {"full", "limited"}
    assert {r["method"] for r in rows} == {"weak", "zero_shot", "cpl", "kd_lp", "ceiling_cpl", "ceiling_kd_lp"}
    assert {r["seed"] for r in rows} == {"0"}
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    assert len(runs) == len(domains) * 2 and all((p / "done").exists() for p in runs)  # ordinary run folders
    assert (out / "report.md").read_text().startswith("# w2sclip demo")
    assert (out / "report.html").exists() and list((out / "plots").glob("*.png"))
    md = (out / "report.md").read_text()  # the two shipped checkpoints are a two-rung pretraining ladder
    assert "## Pretraining ladder: dataset = builtin" in md and (out / "plots" / "ladder_00.png").exists()
    data = json.loads((out / "results.json").read_text())
    assert len(data["records"]) == len(rows)
    for r in rows:
        if r["method"] == "weak":  # weak rows agree with themselves; PGR 0 by definition
            assert float(r["agreement"]) == 1.0

    # the same preset as a sweep into another runs folder, same cache: no new cache entries
    entries = {p.name for sub in ("features", "arrays") for p in (cache / sub).iterdir()}
    res = CliRunner().invoke(app, ["sweep", "builtin", "--quiet", "--runs-dir", str(tmp_path / "r2"),
                                   "--set", "builtin_size=quick", "--set", "grid.seed=[0]", "--set", methods,
                                   "--set", f"cache_dir={cache}"])
    assert res.exit_code == 0, res.output
    assert entries == {p.name for sub in ("features", "arrays") for p in (cache / sub).iterdir()}


def test_quick_is_exactly_the_preset_with_two_overrides():
    from w2sclip.config import load_sweep, resolve_preset
    from w2sclip.demo import QUICK, demo_sweep

    assert QUICK == ("builtin_size=quick", "grid.seed=[0]")
    quick = [c.model_dump() for c in demo_sweep(quick=True).runs()]
    assert quick == [c.model_dump() for c in load_sweep(resolve_preset("builtin"), list(QUICK)).runs()]
    assert len(quick) == 12 and {c["builtin_size"] for c in quick} == {"quick"} and {c["seed"] for c in quick} == {0}
    assert set(demo_sweep().runs()[0].methods) == set(METHODS) - {"coop"}


def test_cli_bad_domain_is_one_clear_line(monkeypatch, capsys, tmp_path):
    import sys

    import pytest

    from w2sclip.cli import run

    monkeypatch.setattr(sys, "argv", ["w2sclip", "demo", "--quick", "--set", "grid.domain=[photos]",
                                      "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        run()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown domain 'photos'" in err and "quickdraw" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()  # nothing done for a bad request
