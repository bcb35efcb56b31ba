"""End to end: ``w2sclip demo --quick`` through the real CLI on the built-in benchmark."""

import csv
import json

import pytest
from typer.testing import CliRunner

from w2sclip.cli import app
from w2sclip.methods import METHODS

REQUIRED = {"dataset", "domain", "strong", "weak", "method", "seed", "accuracy", "pgr", "agreement"}


METHODS_SUBSET = "methods=[zero_shot,cpl,kd_lp]"
"""A subset of the preset's methods keeps these tests short; --quick itself is checked below."""


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``w2sclip demo --quick`` (the methods subset) run once for the tests of this module."""
    tmp = tmp_path_factory.mktemp("demo")
    out, cache = tmp / "out", tmp / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        res = CliRunner().invoke(app, ["demo", "--quick", "--quiet", "--out", str(out), "--cache-dir", str(cache),
                                       "--set", METHODS_SUBSET])
    return tmp, out, cache, res


def test_demo_quick_is_the_builtin_preset_through_sweep_and_report(quick_demo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tmp_path, out, cache, res = quick_demo
    methods = METHODS_SUBSET
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
    md = (out / "report.md").read_text()  # the shipped checkpoints are compute-matched: no ladder
    assert "## Pretraining ladder" not in md and not (out / "plots" / "ladder_00.png").exists()
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
    assert "12 ran (12 copied from the cache's finished runs)" in res.output  # and no fit repeated


def test_quick_is_exactly_the_preset_with_two_overrides():
    from w2sclip.config import load_sweep, resolve_preset
    from w2sclip.demo import QUICK, demo_sweep

    assert QUICK == ("builtin_size=quick", "grid.seed=[0]")
    quick = [c.model_dump() for c in demo_sweep(quick=True).runs()]
    assert quick == [c.model_dump() for c in load_sweep(resolve_preset("builtin"), list(QUICK)).runs()]
    assert len(quick) == 12 and {c["builtin_size"] for c in quick} == {"quick"} and {c["seed"] for c in quick} == {0}
    assert set(demo_sweep().runs()[0].methods) == set(METHODS) - {"coop", "coop_ensemble"}


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


# Loose bounds on the built-in regime targets (w2sclip.eval.regime.builtin_targets) at the quick
# size (one seed, 12 test images per class): each target's threshold moved by this slack, in the
# direction that tolerates sampling noise. They fail when the study drifts out of DomainNet's
# regime (e.g. back to a weak supervisor far below zero-shot), not on noise.
SLACK = {"full: weak − zero-shot (avg)": 0.06, "full: ceiling − weak (avg)": 0.04, "ceiling − weak (": 0.10,
         "weak − chance (": 0.08, "zero-shot / chance (": 0.5, "quickdraw-like": 0.08, "real-photo-like": 0.08,
         "limited: zero-shot avg − full zero-shot avg": 0.04}


def test_quick_demo_stays_in_the_regime_of_the_builtin_targets(quick_demo):
    from w2sclip.eval.regime import builtin_targets

    _, out, _, res = quick_demo
    assert res.exit_code == 0, res.output
    targets = builtin_targets(json.loads((out / "results.json").read_text())["records"])
    assert len(targets) == 29  # full: 2 averages, 3 per-domain kinds x 6, 2 shape targets; limited: 7
    for t in targets:
        slack = next(v for k, v in SLACK.items() if k in t["target"])
        bound = t["threshold"] - slack if t["relation"] == ">=" else t["threshold"] + slack
        ok = t["value"] >= bound if t["relation"] == ">=" else t["value"] <= bound
        assert ok, f"{t['target']}: {t['value']:.3f}, drifted past {bound:.3f} (target {t['threshold']})"
