"""Run folders, sweeps (resume, failures, workers, Ray) and the exported text-free classifier."""

import json
from pathlib import Path

import numpy as np
import pytest

import w2sclip.run as run_mod
from w2sclip.run import steps
from w2sclip.config import SweepConfig, make_run_config
from w2sclip.run import RunFolder, run, run_folder
from w2sclip.run import cache_dir_of as cache_of
from w2sclip.sweep import run_sweep

FAST = {"dataset": "builtin", "builtin_size": "quick", "strong": "full",
        "weak": "lowres:resnet10t", "weak_options": {"input_size": 32, "decode_size": 64,
                         "labels_per_class": 10, "epochs": 3},
        "methods": ["zero_shot", "cpl", "kd_lp"], "progress": False,
        "method_params": {"cpl": {"epochs": 60}, "kd_lp": {"epochs": 60}}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def done_run(cache, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    cfg = make_run_config({**FAST, "domain": "clipart", "cache_dir": str(cache)})
    return cfg, run(cfg, runs_dir)


def test_run_folder_contents(done_run):
    cfg, folder = done_run
    assert folder.name == f"{cfg.slug()}-{cfg.digest()}"
    for name in ("config.json", "records.jsonl", "done", "classnames.json", "splits.json", "predictions.npz",
                 "labels.npz", "projection.npz", "strong.json", "log.jsonl", "fitted/cpl.safetensors"):
        assert (folder / name).exists(), name
    conf = json.loads((folder / "config.json").read_text())
    assert conf["digest"] == cfg.digest() and conf["semantic"]["domain"] == "clipart"
    recs = RunFolder(folder).records()
    assert {r["method"] for r in recs} == {"weak", "zero_shot", "cpl", "kd_lp", "ceiling_cpl", "ceiling_kd_lp"}
    assert all(r["protocol"] == "in_domain" and r["seed"] == 0 for r in recs)
    preds, labels = np.load(folder / "predictions.npz"), np.load(folder / "labels.npz")
    cpl = next(r for r in recs if r["method"] == "cpl")
    assert np.isclose(cpl["accuracy"], (labels["cpl"] == labels["y_true"]).mean())
    assert preds["cpl"].shape == (len(labels["y_true"]), 24)
    splits = json.loads((folder / "splits.json").read_text())
    assert not set(splits["test"]) & set(splits["hold"])
    events = [json.loads(line)["event"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert events[0] == "run_start" and events[-1] == "run_end"


def test_done_run_is_skipped(done_run):
    cfg, folder = done_run
    before = (folder / "done").stat().st_mtime_ns
    assert run(cfg, folder.parent) == folder
    assert (folder / "done").stat().st_mtime_ns == before


def test_export_predicts_like_the_evaluation(done_run, tmp_path):
    from w2sclip.export import TextFreeClassifier, export_classifier, predict_files

    cfg, folder = done_run
    out = export_classifier(folder, tmp_path / "clf", "cpl")
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["method"] == "cpl" and len(meta["classnames"]) == 24 and meta["strong"] == "full"
    clf = TextFreeClassifier.load(out)
    assert getattr(clf.strong.model, "transformer", None) is None  # no text tower
    labels = np.load(folder / "labels.npz")
    paths = [str(p) for p in labels["paths"]]
    assert np.array_equal(clf.predict(paths), labels["cpl"])
    rows, bad = predict_files(clf, paths[:5], top_k=3)
    assert not bad and [r["label"] for r in rows] == list(labels["cpl"][:5])
    assert len(rows[0]["top_k"]) == 3
    with pytest.raises(ValueError, match="exportable here: .*cpl"):
        export_classifier(folder, tmp_path / "x", "coop")


def test_sweep_resumes_after_a_failure(cache, tmp_path, monkeypatch):
    sweep = SweepConfig(name="t", base={**FAST, "cache_dir": str(cache), "methods": ["zero_shot", "cpl"]},
                        grid={"domain": ["clipart", "sketch"]})
    real = run_mod.fit_and_evaluate

    def flaky(x, **kw):
        if kw["ids"]["domain"] == "sketch":
            raise RuntimeError("simulated crash")
        return real(x, **kw)

    monkeypatch.setattr(run_mod, "fit_and_evaluate", flaky)
    res = run_sweep(sweep, tmp_path, progress=False)
    assert res["ran"] == 1 and len(res["failed"]) == 1 and "simulated crash" in res["failed"][0]["error"]
    sketch = run_folder(sweep.runs()[1], tmp_path)
    assert sketch.path.exists() and not RunFolder(sketch).is_done
    assert "run_failed" in (sketch / "log.jsonl").read_text()
    monkeypatch.setattr(run_mod, "fit_and_evaluate", real)
    done_before = (run_folder(sweep.runs()[0], tmp_path) / "done").stat().st_mtime_ns
    res = run_sweep(sweep, tmp_path, progress=False)
    assert (res["skipped"], res["ran"], res["failed"]) == (1, 1, [])
    assert (run_folder(sweep.runs()[0], tmp_path) / "done").stat().st_mtime_ns == done_before
    lines = (tmp_path / "sweep.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["done", "failed", "done"]


def test_sweep_with_two_workers_matches_sequential(cache, tmp_path):
    base = {**FAST, "cache_dir": str(cache), "methods": ["zero_shot", "cpl"], "reuse_runs": False}
    sweep = SweepConfig(name="w", base=base, grid={"domain": ["clipart", "sketch"]})
    run_sweep(sweep, tmp_path / "seq", progress=False)
    res = run_sweep(sweep, tmp_path / "par", workers=2, progress=False)
    assert res["ran"] == 2 and res["reused"] == 0 and not res["failed"]
    for cfg in sweep.runs():
        a = RunFolder(run_folder(cfg, tmp_path / "seq")).records()
        b = RunFolder(run_folder(cfg, tmp_path / "par")).records()
        assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]


def test_sweep_on_local_ray(cache, tmp_path):
    pytest.importorskip("ray")
    import ray

    sweep = SweepConfig(name="ray", base={**FAST, "cache_dir": str(cache), "methods": ["zero_shot"]},
                        grid={"domain": ["clipart", "sketch"]})
    try:
        res = run_sweep(sweep, tmp_path, ray_address="local", progress=False)
    finally:
        ray.shutdown()
    assert res["ran"] == 2 and not res["failed"], res
    assert all(RunFolder(run_folder(c, tmp_path)).is_done for c in sweep.runs())


def _counting_fits(monkeypatch) -> list:
    calls, real = [], run_mod.fit_and_evaluate

    def counted(x, **kw):
        calls.append(kw["ids"]["domain"])
        return real(x, **kw)

    monkeypatch.setattr(run_mod, "fit_and_evaluate", counted)
    return calls


def test_the_same_run_in_another_runs_dir_is_copied_from_the_cache(done_run, tmp_path, monkeypatch):
    cfg, first = done_run
    calls = _counting_fits(monkeypatch)
    folder = run(cfg, tmp_path / "other")
    assert calls == [] and folder.is_done and folder.name == first.name
    done = folder.read_json("done")
    assert done["reused_from"] and (cache_of(cfg) / "runs") in Path(done["reused_from"]).parents
    assert "reused" in (folder / "log.jsonl").read_text() and "fits" not in done["stages_s"]
    names = ["records.jsonl", "splits.json", "predictions.npz", "labels.npz", "projection.npz", "classnames.json",
             "strong.json", *(f"fitted/{h}.safetensors" for h in RunFolder(first).heads())]
    for name in names:
        assert (folder / name).read_bytes() == (first / name).read_bytes(), name
    assert json.loads((folder / "config.json").read_text())["digest"] == cfg.digest()


def test_other_inputs_or_code_are_fitted_again(done_run, tmp_path, monkeypatch):
    """The key is the content the fits see and the code, not the run's name: same config, other
    weak logits (or other source code) -> fitted again, with other numbers for the weak logits."""
    import w2sclip.run.reuse as reuse

    cfg, first = done_run
    calls = _counting_fits(monkeypatch)
    monkeypatch.setattr(reuse, "code_digest", lambda: "other-code")
    run(cfg, tmp_path / "code")
    assert calls == ["clipart"]
    monkeypatch.undo()
    calls = _counting_fits(monkeypatch)
    real = steps.weak_logits
    monkeypatch.setattr(steps, "weak_logits", lambda *a: np.roll(real(*a), 1, axis=1))
    folder = run(cfg, tmp_path / "weak")
    assert calls == ["clipart"] and folder.read_json("done")["reused_from"] is None
    weak = {r["method"]: r["accuracy"] for r in RunFolder(folder).records()}["weak"]
    assert weak != {r["method"]: r["accuracy"] for r in RunFolder(first).records()}["weak"]


def test_force_or_reuse_off_fits_again_and_a_damaged_entry_is_refitted(done_run, tmp_path, monkeypatch, caplog):
    cfg, first = done_run
    calls = _counting_fits(monkeypatch)
    run(cfg.model_copy(update={"reuse_runs": False}), tmp_path / "off")
    assert calls == ["clipart"]
    on = run(cfg, tmp_path / "on")
    entry = Path(on.read_json("done")["reused_from"])
    assert calls == ["clipart"]
    with open(on / "records.jsonl", "r+b") as f:  # editing a copied folder in place leaves the entry alone
        f.write(b" ")
    assert run(cfg, tmp_path / "on2").read_json("done")["reused_from"] == str(entry)
    (entry / "predictions.npz").unlink()  # a damaged entry is never copied: the run is fitted again
    with caplog.at_level("WARNING"):
        folder = run(cfg, tmp_path / "broken")
    assert calls == ["clipart"] * 2 and "lacks ['predictions.npz']" in caplog.text
    assert folder.read_json("done")["reused_from"] is None and (folder / "predictions.npz").exists()
    assert (entry / "predictions.npz").exists()  # and stored anew
    with open(folder / "labels.npz", "r+b") as f:  # the stored files are links of the folder that fitted:
        f.write(b"x")  # an in-place edit there shows as a changed checksum, never as silently other results
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = run(cfg, tmp_path / "again")
    assert calls == ["clipart"] * 3 and "['labels.npz'] changed since it was stored" in caplog.text
    assert again.read_json("done")["reused_from"] is None
    assert run(cfg, tmp_path / "again2").read_json("done")["reused_from"] == str(entry)
    run(cfg, tmp_path / "again2", force=True)  # force refits (and replaces the stored copy)
    assert calls == ["clipart"] * 4
    meta = json.loads((entry / "meta.json").read_text())
    assert Path(meta["from"]).parent == tmp_path / "again2" and meta["fitted_with"]["threads"] >= 1


def test_result_key_follows_every_input_and_no_execution_setting(monkeypatch):
    from types import SimpleNamespace

    import w2sclip.run.reuse as reuse
    from w2sclip.features.cache import digest
    from w2sclip.run import Prepared
    from w2sclip.run.fit import FitInputs

    rng = np.random.default_rng(0)
    base = {"features": rng.normal(size=(6, 4)).astype(np.float32), "weak": rng.normal(size=(6, 3)).astype(np.float32),
            "labels": np.array([0, 1, 2, 0, 1, 2]), "index": np.arange(6), "paths": [f"{i}.png" for i in range(6)],
            "bad": [], "classnames": ["a", "b", "c"], "templates": ["a photo of a {}."], "strong": {"w": "sha-1"},
            "scale": 100.0, "cfg": {"domain": "real", "seed": 0}}

    def key(**change):
        v = {**base, **change}
        task = SimpleNamespace(classnames=v["classnames"], test=SimpleNamespace(
            samples=[(p, 0) for p in v["paths"]], templates=v["templates"]))
        x = FitInputs(v["features"], v["weak"], v["labels"], lambda name: None, v["scale"])
        p = Prepared(task, x, v["index"], SimpleNamespace(identity=lambda: v["strong"]), v["bad"])
        return digest(reuse.result_key(make_run_config(v["cfg"]), p))

    ref = key()
    f2, w2 = base["features"].copy(), base["weak"].copy()
    f2[0, 0] += 1e-6
    w2[5, 2] -= 1e-6
    changes = {"features": f2, "weak": w2, "labels": np.array([0, 1, 2, 0, 1, 1]), "index": np.array([1, 0, 2, 3, 4, 5]),
               "paths": ["x.png", *base["paths"][1:]], "bad": [("z.png", "empty file (0 bytes)")],
               "classnames": ["a", "b", "d"], "templates": ["a sketch of a {}."], "strong": {"w": "sha-2"},
               "scale": 50.0, "cfg": {"domain": "real", "seed": 1}}
    for name, value in changes.items():
        assert key(**{name: value}) != ref, name
    assert key(cfg={**base["cfg"], "device": "cuda", "num_workers": 8, "batch_size": 7, "reuse_runs": False}) == ref
    monkeypatch.setattr(reuse, "code_digest", lambda: "other")
    assert key() != ref
    monkeypatch.undo()
    monkeypatch.setattr(reuse, "library_versions", lambda dists: {d: "0" for d in dists})
    assert key() != ref


def test_storing_or_copying_a_run_never_fails_it(done_run, tmp_path, monkeypatch, caplog):
    """A full or read-only cache while storing, or a failed copy, costs only the reuse."""
    import errno

    import w2sclip.run.reuse as reuse

    cfg, first = done_run
    calls = _counting_fits(monkeypatch)
    entry = Path(run(cfg, tmp_path / "a").read_json("done")["reused_from"])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reuse, "_copy", full)  # copying into the new folder fails: the entry is kept
    with caplog.at_level("WARNING"):
        folder = run(cfg, tmp_path / "b")
    assert folder.is_done and calls == ["clipart"] and "could not copy stored run" in caplog.text
    assert (entry / "meta.json").exists()
    caplog.clear()
    monkeypatch.setattr(reuse, "_link_or_copy", full)  # storing fails too (forced: the entry is replaced)
    with caplog.at_level("WARNING"):
        folder = run(cfg, tmp_path / "b", force=True)
    assert folder.is_done and calls == ["clipart"] * 2 and "could not store run" in caplog.text
    assert not entry.exists() and RunFolder(folder).records() == RunFolder(first).records()
