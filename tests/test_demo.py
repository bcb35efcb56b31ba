"""End to end: ``w2sclip demo --quick`` through the real CLI on the built-in benchmark."""

import csv
import json

from typer.testing import CliRunner

from w2sclip.cli import app
from w2sclip.demo import DEMO_METHODS

REQUIRED = {"dataset", "domain", "strong", "weak", "method", "seed", "accuracy", "pgr", "agreement"}


def test_demo_quick_writes_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["demo", "--quick", "--quiet", "--out", str(out),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "| method |" in res.output and "cpl" in res.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert REQUIRED <= set(rows[0])
    domains = {"real", "clipart", "painting", "sketch", "quickdraw", "infograph"}
    assert {r["domain"] for r in rows} == domains
    assert {r["strong"] for r in rows} == {"full", "limited"}
    methods = {"weak", "ceiling", "ceiling_lp", *DEMO_METHODS}
    assert {r["method"] for r in rows} == methods
    assert len(rows) == len(domains) * 2 * len(methods)  # one seed in --quick
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        if r["pgr"] == "":  # undefined only where the ceiling is not above the weak model
            assert float(r["ceiling_accuracy"]) <= float(r["weak_accuracy"])
    data = json.loads((out / "results.json").read_text())
    assert len(data["records"]) == len(rows) and "timings_s" in data["meta"]
    assert (out / "report.md").read_text().startswith("# w2sclip demo")
    # weak rows agree with themselves; the weak model's PGR is 0 by definition
    for r in rows:
        if r["method"] == "weak":
            assert float(r["agreement"]) == 1.0
            assert r["pgr"] == "" or abs(float(r["pgr"])) < 1e-12


def test_cli_bad_domain_is_one_clear_line(monkeypatch, capsys, tmp_path):
    import sys

    import pytest

    from w2sclip.cli import run

    monkeypatch.setattr(sys, "argv", ["w2sclip", "demo", "--quick", "--domains", "photos",
                                      "--cache-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        run()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown domain(s) ['photos']" in err and "quickdraw" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing generated for a bad request
