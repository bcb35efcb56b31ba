import json
import zlib

import numpy as np
import pytest

from w2sclip.report import build_report, load_runs, summary_table

METHODS = ("zero_shot", "kd_lp", "cpl", "cpl_poe")


def _rec(method, domain, seed, acc, weak=0.5, ceil=0.8, pgr=None):
    return {"strong": "s", "method": method, "domain": domain, "seed": seed, "accuracy": acc,
            "weak_accuracy": weak, "ceiling_accuracy": ceil, "agreement": 0.5, "pgr": pgr,
            "ceiling": "ceiling_cpl"}


def _trio(domain, seed, student, weak, ceiling):
    """Records of a student, the weak model and the student's ceiling on one (domain, seed)."""
    return [_rec("cpl", domain, seed, student), _rec("weak", domain, seed, weak),
            _rec("ceiling_cpl", domain, seed, ceiling)]


def write_run(root, *, domain, strong, seed, accuracy=None, methods=METHODS, n_classes=5, dim=16,
              n_test=60, dataset="toy", weak="w", protocol="in_domain", done=True, predictions=True,
              projection=True, separation=3.0, tag="", dataset_id=None, data_root=None):
    """A run folder of the sweep's schema (docs/report.md) with random-but-fixed numbers.

    ``accuracy`` maps method -> accuracy; the rest are drawn from the run's seed. Predictions
    are drawn to have about each method's accuracy; features cluster by class.
    """
    from w2sclip.eval.metrics import pgr

    base = np.random.default_rng(zlib.crc32(f"{domain}/{strong}".encode()))
    key = zlib.crc32(f"{domain}/{strong}/{seed}".encode())
    rng = np.random.default_rng(key)
    names = ["weak", *methods, "ceiling_kd_lp", "ceiling_cpl"]
    mean = {m: base.uniform(0.35, 0.75) for m in names} | {"weak": base.uniform(0.2, 0.4),
                                                           "ceiling_kd_lp": 0.8, "ceiling_cpl": 0.85}
    acc = {m: float(np.clip(a + rng.normal(0, 0.02), 0, 1)) for m, a in mean.items()}
    acc.update(accuracy or {})
    folder = root / f"{dataset}-{domain}-{strong}-s{seed}{tag}-{key % 10**6:06d}"
    folder.mkdir(parents=True)
    cfg = {"semantic": {"dataset": dataset, "domain": domain, "strong": strong, "weak": weak,
                        "protocol": protocol, "seed": seed, "methods": list(methods)}}
    (folder / "config.json").write_text(json.dumps(cfg))
    classes = [f"class {i}" for i in range(n_classes)]
    (folder / "classnames.json").write_text(json.dumps(classes))
    recs = []
    for m in names:
        own = None if m == "weak" else "ceiling_kd_lp" if m in ("kd_lp", "ceiling_kd_lp") else "ceiling_cpl"
        ceil = acc[own] if own else None
        recs.append({"dataset": dataset, "domain": domain, "strong": strong, "weak": weak, "method": m,
                     "seed": seed, "protocol": protocol, "accuracy": acc[m], "weak_accuracy": acc["weak"],
                     "ceiling": own, "ceiling_accuracy": ceil, "n_classes": n_classes,
                     "pgr": pgr(acc[m], acc["weak"], ceil) if own else None,
                     "agreement": 1.0 if m == "weak" else float(rng.uniform(0.2, 0.8)),
                     "ece": float(rng.uniform(0.01, 0.2)), "top5": 1.0, "hparams": "{}",
                     **({"dataset_id": dataset_id, "dataset_root": data_root} if dataset_id else {})})
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    y = rng.integers(0, n_classes, n_test)
    if predictions:
        preds = {"y_true": y.astype(np.int64), "test_index": np.arange(n_test, dtype=np.int64)}
        labels = dict(preds)
        for m in names:
            pred = np.where(rng.random(n_test) < acc[m], y, rng.integers(0, n_classes, n_test))
            logits = rng.normal(size=(n_test, n_classes)) + 4 * np.eye(n_classes)[pred]
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            preds[m], labels[m] = p.astype(np.float16), p.argmax(1)
        np.savez_compressed(folder / "predictions.npz", **preds)
        np.savez_compressed(folder / "labels.npz", **labels)
    if projection:
        mu = rng.normal(size=(n_classes, dim))
        unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
        feats = unit(separation * mu[y] + rng.normal(size=(n_test, dim)))
        text = unit(mu + 0.8 * rng.normal(size=mu.shape) + 1.5)  # + a shared offset: the modality gap
        arrays = {"features": feats.astype(np.float16), "labels": y.astype(np.int64), "text_prototypes": text}
        for m in ("cpl", "cpl_poe", "ceiling_cpl"):
            if m in names:
                arrays[m] = unit(text + {"cpl": 0.6, "cpl_poe": 0.3, "ceiling_cpl": 1.0}[m] * (unit(mu) - text))
        np.savez_compressed(folder / "projection.npz", **arrays)
    if done:
        (folder / "done").write_text(json.dumps({"finished": "2026-01-01T00:00:00"}))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2 domains x 2 strong x 2 seeds, C = 5, plus one unfinished run; cpl on (a, full) is fixed."""
    root = tmp_path_factory.mktemp("runs")
    for strong in ("full", "limited"):
        for domain in ("a", "b"):
            for seed in (0, 1):
                acc = {"cpl": 0.6 + 0.1 * seed} if (strong, domain) == ("full", "a") else {}
                if strong == "limited" and domain == "b":  # ceiling <= weak: PGR undefined
                    acc.update(weak=0.7, ceiling_cpl=0.6, ceiling_kd_lp=0.6)
                write_run(root, domain=domain, strong=strong, seed=seed, accuracy=acc,
                          predictions=strong == "full", projection=strong == "full")
    write_run(root, domain="a", strong="full", seed=2, accuracy={"cpl": 0.0}, done=False)
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    # the shipped full and limited are compute-matched (no ladder); here they stand for two
    # strong models of different pretraining sizes, so that the report holds a ladder too
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("w2sclip.models.strong.scale.pretraining_samples", {"full": 2e6, "limited": 1e6}.get)
        md = build_report(runs, out, title="toy report")
    return out, md.read_text()


def _row(markdown, heading, metric_caption, method):
    """The row of ``method`` in the table under ``metric_caption`` in section ``heading``."""
    section = markdown.split(heading, 1)[1]
    table = section.split(metric_caption, 1)[1]
    return next(line for line in table.splitlines() if line.startswith(f"| {method} |"))


def test_table_mean_std_and_domain_average():
    recs = [_rec("cpl", "a", 0, 0.6), _rec("cpl", "a", 1, 0.8), _rec("cpl", "b", 0, 0.2),
            _rec("cpl", "b", 1, 0.4)]
    table = summary_table(recs, "s")
    row = next(line for line in table.splitlines() if line.startswith("| cpl"))
    # a: mean 70, std 14.1; b: 30 +- 14.1; avg per seed: 40, 60 -> 50 +- 14.1
    assert row == "| cpl | 70.0 ± 14.1 | 30.0 ± 14.1 | 50.0 ± 14.1 |"


def test_pgr_cell_is_the_pgr_of_seed_means_not_a_mean_of_ratios():
    # seed 0: gap 0.30, PGR 1/3; seed 1: gap 0.02, PGR 5: mean of ratios 2.67; PGR of means 0.375
    recs = _trio("a", 0, 0.6, 0.5, 0.8) + _trio("a", 1, 0.6, 0.5, 0.52)
    row = next(line for line in summary_table(recs, "s", "pgr").splitlines() if line.startswith("| cpl"))
    assert row.startswith("| cpl | ceiling_cpl | undef.")  # gap 0.16 below 2 SE of a 2-seed bootstrap
    recs = sum((_trio("a", k, 0.6 + 0.01 * k, 0.5, 0.8 + 0.01 * k) for k in range(3)), [])
    row = next(line for line in summary_table(recs, "s", "pgr").splitlines() if line.startswith("| cpl"))
    value = float(row.split("|")[3].split("[")[0])
    assert value == pytest.approx((0.61 - 0.5) / (0.81 - 0.5), abs=0.005)
    lo, hi = (float(v) for v in row.split("[")[1].split("]")[0].split(","))
    assert lo <= value <= hi


def test_undefined_pgr_says_why():
    recs = _trio("a", 0, 0.6, 0.8, 0.7) + _trio("a", 1, 0.6, 0.8, 0.7)
    row = next(line for line in summary_table(recs, "s", "pgr").splitlines() if line.startswith("| cpl"))
    assert "undef. (gap -10.0" in row


def test_report_never_pools_different_weak_supervisors():
    from w2sclip.report import markdown_report

    recs = []
    for weak, acc in (("A", 0.5), ("B", 0.9)):
        for seed in (0, 1):
            r = _rec("cpl", "a", seed, acc)
            r.update(weak=weak, dataset="d")
            recs.append(r)
    report = markdown_report(recs)
    assert "weak = A" in report and "weak = B" in report
    assert "| cpl | 50.0 ± 0.0 | 50.0 ± 0.0 |" in report and "| cpl | 90.0 ± 0.0 | 90.0 ± 0.0 |" in report
    assert "23.1" not in report  # the pooled mean ± std of both supervisors


def test_load_runs_skips_unfinished_and_lists_them(runs):
    records, infos = load_runs(runs)
    assert len(infos) == 9 and sum(not i.complete for i in infos) == 1
    assert len(records) == 8 * 7  # 8 finished runs x (weak + 4 methods + 2 ceilings)
    assert {r["method"] for r in records} >= {"ceiling_cpl", "ceiling_kd_lp"}
    assert all(r["accuracy"] != 0.0 for r in records)  # the unfinished run's cpl = 0.0 is not in
    assert {i.group for i in infos if i.complete} == {("toy", s, "w", "in_domain") for s in ("full", "limited")}


def test_report_tables_hold_hand_computed_numbers(report):
    out, md = report
    heading = "## strong = full, weak = w, dataset = toy, protocol = in_domain (seeds [0, 1])"
    row = _row(md, heading, "Accuracy on D_test", "cpl")
    assert row.startswith("| cpl | 65.0 ± 7.1 |")  # (0.6, 0.7): mean 65.0 %, sample std 7.07
    for caption in ("Agreement with the weak", "Calibration: expected calibration error"):
        assert _row(md, heading, caption, "cpl").count("±") == 3  # a, b, avg
    pgr_row = _row(md, heading, "PGR = ", "cpl")
    assert pgr_row.startswith("| cpl | ceiling_cpl |") and pgr_row.count("[") + pgr_row.count("undef.") == 3
    html = (out / "report.html").read_text()
    assert "<table>" in html and "<td>65.0 ± 7.1</td>" in html and html.count("<table>") == 11  # + 2 regime tables + the ladder
    assert (out / "results.csv").read_text().count("\n") == 1 + 8 * 7


def test_report_lists_incomplete_runs_and_undefined_pgr(report):
    _, md = report
    assert "incomplete: 1 runs skipped" in md and "toy-a-full-s2-" in md
    heading = "## strong = limited, weak = w, dataset = toy, protocol = in_domain"
    row = _row(md, heading, "PGR = ", "cpl")
    assert row.split("|")[4].strip().startswith("undef. (gap -10.0")  # domain b: ceiling <= weak
    assert "ceiling≤weak" in md.split(heading, 1)[1].split("PGR = ")[0]  # flagged in the regime table


def test_report_writes_every_plot_and_skips_with_a_note(report):
    from PIL import Image

    out, md = report
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["group00_accuracy.png", "group00_confusion.png", "group00_pgr.png", "group00_projection.png",
                    "group01_accuracy.png", "group01_pgr.png", "ladder_00.png", "strong_00.png"]
    for name in pngs:
        with Image.open(out / "plots" / name) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 300
        assert f"(plots/{name})" in md
    # limited has no predictions.npz / projection.npz: skipped with a note, not a crash
    assert "no predictions.npz in the runs of domain a; confusion matrix skipped" in md
    assert "no projection.npz in the runs of domain a; projection plot skipped" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and 'src="plots/' not in html


def test_confusion_domain_and_method_choice(runs, tmp_path):
    md = build_report(runs, tmp_path, confusion_domain="b", confusion_method="kd_lp").read_text()
    assert "Most confused on b with kd_lp" in md
    with pytest.raises(KeyError, match="unknown confusion domain 'c'.*a, b"):
        build_report(runs, tmp_path, confusion_domain="c")
    md = build_report(runs, tmp_path, confusion_method="coop").read_text()
    assert "method 'coop' has no predictions on domain a (available: weak, zero_shot" in md


def test_corrupt_records_line_names_file_and_line(tmp_path):
    folder = write_run(tmp_path, domain="a", strong="full", seed=0, predictions=False, projection=False)
    with open(folder / "records.jsonl", "a") as f:
        f.write('{"method": "cpl", "accuracy": 0.5\n')
    with pytest.raises(ValueError, match=r"records.jsonl, line 8: not valid JSON"):
        load_runs(tmp_path)


def test_missing_or_empty_runs_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no run folders"):
        load_runs(tmp_path)
    write_run(tmp_path, domain="a", strong="full", seed=0, done=False)
    with pytest.raises(ValueError, match="no finished runs"):
        build_report(tmp_path, tmp_path / "out")


def test_conflicting_duplicate_runs_are_refused(tmp_path):
    write_run(tmp_path, domain="a", strong="full", seed=0, accuracy={"cpl": 0.5})
    write_run(tmp_path, domain="a", strong="full", seed=0, accuracy={"cpl": 0.5}, tag="x")
    records, _ = load_runs(tmp_path)  # the same numbers twice (e.g. a rerun): kept once
    assert len(records) == 7
    write_run(tmp_path, domain="a", strong="full", seed=0, accuracy={"cpl": 0.6}, tag="y")
    with pytest.raises(ValueError, match="both hold cpl on a .seed 0. with different accuracies"):
        load_runs(tmp_path)


def test_runs_of_two_different_datasets_of_one_name_are_never_pooled(tmp_path, caplog):
    """Two CSV datasets at different roots (other images, other class lists) are two groups, not
    three seeds of one cell, and the report says so; the same seed in both is no conflict. One
    dataset's domains (each with its own split fingerprint) stay one group."""
    for seed in (0, 1):
        for dom, did in (("real", "aaaa1111bbbb"), ("sketch", "eeee5555ffff")):
            write_run(tmp_path, domain=dom, strong="full", seed=seed, dataset="csv", dataset_id=did,
                      data_root="/data/one", accuracy={"zero_shot": 0.75})
    write_run(tmp_path, domain="real", strong="full", seed=0, dataset="csv", dataset_id="cccc2222dddd",
              data_root="/data/two", accuracy={"zero_shot": 0.0}, tag="other")
    with caplog.at_level("WARNING"):
        records, _ = load_runs(tmp_path)
    assert {r["dataset"] for r in records} == {"csv [one]", "csv [two]"}
    assert "runs of dataset 'csv' come from 2 different datasets" in caplog.text
    one = [r for r in records if r["method"] == "zero_shot" and r["dataset"] == "csv [one]"]
    assert sorted(r["accuracy"] for r in one) == [0.75] * 4 and {r["domain"] for r in one} == {"real", "sketch"}
    write_run(tmp_path, domain="real", strong="full", seed=2, dataset="csv", dataset_id="9999aaaa0000",
              data_root="/data/one", tag="changed")
    with pytest.raises(ValueError, match="under root /data/one hold 2 different data"):
        load_runs(tmp_path)


def test_cli_report(runs, tmp_path):
    from typer.testing import CliRunner

    from w2sclip.cli import app

    res = CliRunner().invoke(app, ["report", str(runs), "--out", str(tmp_path), "--title", "T"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").read_text().startswith("# T")


def test_pretraining_ladder_gains_and_pgr_by_samples_seen():
    """Gains are paired per seed, rungs are sorted by samples seen, unknown sizes are named."""
    from w2sclip.eval.ladder import ladders
    from w2sclip.report import markdown_report

    accs = {"zero_shot": (0.5, 0.6), "kd_lp": (0.55, 0.65), "cpl": (0.6, 0.8), "weak": (0.3, 0.3),
            "ceiling_cpl": (0.9, 0.9), "ceiling_kd_lp": (0.85, 0.85)}
    recs = []
    for strong, shift in (("ViT-B-32:openai", 0.05), ("limited", 0.0), ("mystery:thing", 0.0)):
        for seed in (0, 1):
            for m, a in accs.items():
                own = {"cpl": "ceiling_cpl", "kd_lp": "ceiling_kd_lp", "zero_shot": "ceiling_kd_lp"}.get(m)
                recs.append({"dataset": "toy", "domain": "a", "strong": strong, "weak": "w", "method": m,
                             "seed": seed, "accuracy": a[seed] + (shift if m == "cpl" else 0.0),
                             "weak_accuracy": 0.3, "ceiling": own,
                             "ceiling_accuracy": accs[own][seed] if own else None})
    (lad,) = ladders(recs)
    assert [r.strong for r in lad.rungs] == ["limited", "ViT-B-32:openai"] and lad.unknown == ["mystery:thing"]
    low, high = lad.rungs
    assert low.samples == 2100 * 256 and high.samples == 12.8e9
    assert low.gain[("zero_shot", "cpl", "a")] == pytest.approx(0.15)
    assert low.gain[("kd_lp", "cpl", "avg")] == pytest.approx(0.10)
    assert high.gain[("zero_shot", "cpl", "a")] == pytest.approx(0.20)
    assert low.pgr[("cpl", "a")] == pytest.approx((0.7 - 0.3) / (0.9 - 0.3))
    md = markdown_report(recs)
    assert "## Pretraining ladder: dataset = toy, weak = w" in md
    assert "| limited | 538k | a |" in md and "+15.0 / +10.0 / 0.67" in md
    assert "Left out (pretraining size unknown): mystery:thing." in md
    # the shipped full and limited are compute-matched (same samples seen): no ladder of the two
    matched = [r for r in recs if r["strong"] == "limited"]
    assert ladders(matched + [{**r, "strong": "full"} for r in matched]) == []


def test_builtin_targets_need_the_whole_study(tmp_path):
    """A built-in study restricted to some domains or without zero-shot measures no target (it
    used to crash the report with KeyError 'avg' after every run had finished)."""
    from w2sclip.data.builtin_render import DOMAINS
    from w2sclip.eval.regime import builtin_targets

    def recs(domains, methods=("weak", "zero_shot", "ceiling_cpl")):
        acc = {"weak": 0.6, "zero_shot": 0.45, "ceiling_cpl": 0.85}
        return [{"dataset": "builtin", "strong": "full", "protocol": "in_domain", "domain": d, "seed": 0,
                 "method": m, "accuracy": acc[m], "n_classes": 24} for d in domains for m in methods]

    whole = builtin_targets(recs(DOMAINS))
    assert len(whole) == 2 + 3 * len(DOMAINS) + 2  # the same weak/zero-shot gap everywhere: no domain
    assert [t["target"] for t in whole if not t["ok"]] == [  # is quickdraw-like or real-photo-like
        "full: max over domains of weak − zero-shot (quickdraw-like)",
        "full: max over domains of zero-shot − weak (real-photo-like)"]
    assert builtin_targets(recs(DOMAINS[:1])) == []
    assert builtin_targets(recs(DOMAINS, ("weak", "ceiling_cpl"))) == []
    write_run(tmp_path / "runs", domain="real", strong="full", seed=0, dataset="builtin", methods=("zero_shot", "cpl"))
    md = build_report(tmp_path / "runs", tmp_path / "report").read_text()  # a one-domain built-in study
    assert "## " in md and "Built-in regime targets" not in md
