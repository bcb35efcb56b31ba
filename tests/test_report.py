from w2sclip.report import summary_table


def _rec(method, domain, seed, acc, weak=0.5, ceil=0.8, pgr=None):
    return {"strong": "s", "method": method, "domain": domain, "seed": seed, "accuracy": acc,
            "weak_accuracy": weak, "ceiling_accuracy": ceil, "agreement": 0.5, "pgr": pgr}


def test_table_mean_std_and_domain_average():
    recs = [_rec("cpl", "a", 0, 0.6), _rec("cpl", "a", 1, 0.8), _rec("cpl", "b", 0, 0.2),
            _rec("cpl", "b", 1, 0.4)]
    table = summary_table(recs, "s")
    row = [line for line in table.splitlines() if line.startswith("| cpl")][0]
    # a: mean 70, std 14.1; b: 30 +- 14.1; avg per seed: 40, 60 -> 50 +- 14.1
    assert row == "| cpl | 70.0 ± 14.1 | 30.0 ± 14.1 | 50.0 ± 14.1 |"


def test_undefined_pgr_is_marked_not_averaged_in_silently():
    recs = [_rec("cpl", "a", 0, 0.6, pgr=0.5), _rec("cpl", "a", 1, 0.6, weak=0.8, ceil=0.7, pgr=None)]
    row = [line for line in summary_table(recs, "s", "pgr").splitlines() if line.startswith("| cpl")][0]
    assert "0.50 ± 0.00 (1/2 defined)" in row
    recs = [_rec("cpl", "a", 0, 0.6, weak=0.8, ceil=0.7, pgr=None)]
    row = [line for line in summary_table(recs, "s", "pgr").splitlines() if line.startswith("| cpl")][0]
    assert "undef." in row


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
