"""Config objects and YAML presets: every preset loads and validates; errors name the fix."""

from pathlib import Path

import pytest

from w2sclip.config import RunConfig, load_sweep, make_run_config, parse_overrides, preset_dir

PRESETS = sorted(preset_dir().glob("*.yaml"))


def test_presets_exist():
    names = {p.stem for p in PRESETS}
    assert {"builtin", "domainnet", "office_home", "cross_domain", "weak_clip"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads(path):
    sweep = load_sweep(path)
    runs = sweep.runs()
    assert runs, f"{path.name} has no runs"
    digests = {r.digest() for r in runs}
    assert len(digests) == len(runs), "two runs of one grid share a digest"
    for r in runs:
        assert isinstance(r, RunConfig)


def test_paper_preset_is_the_paper_study():
    sweep = load_sweep(preset_dir() / "domainnet.yaml")
    runs = sweep.runs()
    assert {r.domain for r in runs} == {"clipart", "infograph", "painting", "quickdraw", "real", "sketch"}
    assert {r.strong for r in runs} == {"ViT-B-32:openai", "RN50:cc12m"}
    assert {r.seed for r in runs} == {0, 1, 2}
    assert len(runs) == 6 * 2 * 2 * 3
    assert "cpl" in runs[0].methods


def test_protocols_derived():
    assert {r.protocol for r in load_sweep(preset_dir() / "weak_clip.yaml").runs()} == {"weak_clip"}
    cross = load_sweep(preset_dir() / "cross_domain.yaml").runs()
    assert {r.protocol for r in cross} == {"cross_domain", "in_domain"}
    assert sum(r.protocol == "in_domain" for r in cross) == 6 * 3


def test_digest_ignores_execution_fields():
    a = make_run_config({"domain": "real"})
    b = make_run_config({"domain": "real", "device": "cuda", "num_workers": 8, "progress": False})
    c = make_run_config({"domain": "real", "seed": 1})
    assert a.digest() == b.digest() != c.digest()
    assert a.slug().startswith("builtin-real-full")


def test_builtin_world_enters_the_digest_only_where_it_names_a_new_world():
    a = make_run_config({"domain": "real", "builtin_world": 1})
    assert "builtin_world" not in a.semantic()  # world 1 run folders keep their names
    w2 = make_run_config({"domain": "real"})
    assert w2.builtin_world == 2 and w2.semantic()["builtin_world"] == 2 and w2.digest() != a.digest()
    other = make_run_config({"dataset": "pacs", "root": "/data/pacs", "domain": "photo", "builtin_world": 2})
    assert "builtin_world" not in other.semantic()
    with pytest.raises(ValueError, match="builtin_world"):
        make_run_config({"domain": "real", "builtin_world": 3})


def test_overrides_set_base_and_grid(tmp_path):
    sweep = load_sweep(preset_dir() / "builtin.yaml",
                       ["builtin_size=quick", "grid.seed=[0]", "strong=full", "methods=[cpl,kd_lp]"])
    runs = sweep.runs()
    assert len(runs) == 6  # strong forced to one value, one seed
    assert all(r.builtin_size == "quick" and r.methods == ("cpl", "kd_lp") for r in runs)


def test_unknown_key_names_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key.*'seeds'.*did you mean 'seed'"):
        load_sweep(preset_dir() / "builtin.yaml", ["seeds=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {domian: real}\n")
    with pytest.raises(ValueError, match=r"domian.*did you mean 'domain'"):
        load_sweep(bad)
    bad.write_text("grid: {colour: [red]}\n")
    with pytest.raises(ValueError, match=r"unknown grid key"):
        load_sweep(bad)


def test_bad_values_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['cpl2'\]; valid: .*cpl"):
        make_run_config({"domain": "real", "methods": ["cpl2"]})
    with pytest.raises(ValueError, match=r"hold_fraction"):
        make_run_config({"domain": "real", "hold_fraction": 1.5})
    with pytest.raises(FileNotFoundError, match="neither a YAML file nor a packaged preset; presets: builtin, "):
        load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("base: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep(tmp_path / "x.yaml")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_overrides(["seed"])


def test_run_config_is_frozen():
    cfg = make_run_config({"domain": "real"})
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]
    assert Path(preset_dir()).name == "presets"


def test_weak_options_checked_before_any_work():
    with pytest.raises(ValueError, match=r"weak_options \['epoch'\] are not options of weak kind 'lowres'; valid: .*epochs"):
        load_sweep(preset_dir() / "builtin.yaml", ["weak_options={epoch: 3}"])
    with pytest.raises(KeyError, match="unknown weak kind 'timmm'"):
        load_sweep(preset_dir() / "builtin.yaml", ["weak=timmm:resnet18"])
    with pytest.raises(ValueError, match=r"model_kwargs must be a mapping .* or null, got \[32, 64\]"):
        load_sweep(preset_dir() / "builtin.yaml", ["weak_options.model_kwargs=[32, 64]"])
    plain = load_sweep(preset_dir() / "builtin.yaml", ["weak=lowres:resnet18", "weak_options.model_kwargs=null"])
    assert "model_kwargs" not in plain.runs()[0].weak_options  # null removes the key: the kind's default


def test_checks_before_any_work_and_deep_merge():
    with pytest.raises(KeyError, match="unknown domain 'Art' for office_home; valid: art"):
        load_sweep(preset_dir() / "office_home.yaml", ["grid.domain=[Art]"])
    with pytest.raises(ValueError, match="strong"):
        load_sweep(preset_dir() / "builtin.yaml", ["strong=ViT-B-32:"])
    sweep = load_sweep(preset_dir() / "builtin.yaml", ["weak_options.epochs=1", "base.seed=4"])
    run = sweep.runs()[0]
    assert run.weak_options == {"input_size": 32, "decode_size": 64, "labels_per_class": 30, "epochs": 1,
                                "batch_size": 32, "model_kwargs": {"channels": [32, 64, 128, 256]}}
    assert {r.seed for r in sweep.runs()} == {4}


def test_source_domain_identity():
    a = make_run_config({"domain": "real"})
    b = make_run_config({"domain": "real", "source_domain": "real"})
    assert b.source_domain is None and a.digest() == b.digest() and b.protocol == "in_domain"
    assert make_run_config({"domain": "real", "source_domain": "sketch"}).protocol == "cross_domain"
    with pytest.raises(ValueError, match="drop source_domain"):
        make_run_config({"domain": "real", "source_domain": "sketch", "weak": "clip:limited"})
    c = make_run_config({"domain": "real", "weak_options": {"num_workers": 4}})
    assert c.digest() == a.digest()


def test_builtin_world_generates_its_own_folder(tmp_path, monkeypatch):
    import w2sclip.data.builtin as builtin
    from w2sclip.run.task import dataset_root

    seen = []
    monkeypatch.setattr(builtin, "make_builtin", lambda out, **kw: seen.append((out, kw)) or out)
    for world in (1, 2):
        dataset_root(make_run_config({"domain": "real", "builtin_size": "quick", "builtin_world": world}), tmp_path)
    assert [(p.name, kw["world"]) for p, kw in seen] == [("builtin-quick-w1", 1), ("builtin-quick-w2", 2)]


def test_cache_dir_expands_home_alike_where_checked_and_where_used(tmp_path, monkeypatch):
    from w2sclip.fileio import default_cache_dir
    from w2sclip.run import cache_dir_of

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("W2SCLIP_CACHE", raising=False)
    cfg = make_run_config({"domain": "real", "cache_dir": "~/w2s-cache"})
    assert cache_dir_of(cfg) == default_cache_dir(cfg.cache_dir) == tmp_path / "w2s-cache"
    assert cache_dir_of(make_run_config({"domain": "real"})) == tmp_path / ".cache" / "w2sclip"
    monkeypatch.setenv("W2SCLIP_CACHE", "~/env-cache")
    assert cache_dir_of(make_run_config({"domain": "real"})) == tmp_path / "env-cache"
