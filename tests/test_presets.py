"""Presets ship inside the package: name resolution, listing, and the built wheel's contents."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from w2sclip.config import list_presets, load_sweep, preset_dir, resolve_preset

REPO = Path(__file__).resolve().parents[1]


def test_presets_are_package_data_and_listed():
    assert preset_dir().parent.name == "w2sclip"
    presets = list_presets()
    assert {"builtin", "domainnet", "office_home", "cross_domain", "weak_clip", "pretraining_ladder"} <= set(presets)
    assert all(presets.values()), "every preset needs a one-line description"


def test_resolution_local_path_wins_then_packaged_name(tmp_path, monkeypatch):
    packaged = preset_dir() / "builtin.yaml"
    assert resolve_preset("builtin") == packaged
    assert resolve_preset("builtin.yaml") == packaged
    assert load_sweep("builtin").name == load_sweep(packaged).name
    monkeypatch.chdir(tmp_path)  # outside a checkout: the documented configs/<name>.yaml still resolves
    assert resolve_preset("configs/builtin.yaml") == packaged
    (tmp_path / "builtin.yaml").write_text("name: mine\nbase: {domain: sketch}\n")
    assert resolve_preset("builtin.yaml") == Path("builtin.yaml")
    assert load_sweep("builtin.yaml").name == "mine"
    with pytest.raises(FileNotFoundError, match=r"'nope' is neither a YAML file nor a packaged preset; "
                                                r"presets: builtin, .*weak_clip"):
        resolve_preset("nope")
    with pytest.raises(FileNotFoundError, match="packaged preset"):
        resolve_preset(tmp_path / "elsewhere" / "builtin.yaml")  # a missing path outside configs/


def test_list_presets_cli():
    from typer.testing import CliRunner

    from w2sclip.cli import app

    res = CliRunner().invoke(app, ["list", "presets"])
    assert res.exit_code == 0, res.output
    lines = dict(line.split(None, 1) for line in res.output.strip().splitlines())
    assert lines["builtin"].strip() == list_presets()["builtin"]


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the tree, so no build/ or egg-info lands in the checkout."""
    src = tmp_path / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "dist"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(out), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = out.glob("w2sclip-*.whl")
    return wheel


def test_wheel_holds_presets_checkpoints_and_class_list(tmp_path):
    """The wheel users install (``pip install .``) carries every file the package reads at run
    time; installed from it, preset names resolve without a checkout."""
    pytest.importorskip("setuptools")
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {f"w2sclip/presets/{p.name}" for p in preset_dir().glob("*.yaml")}
    checkpoints = {f"w2sclip/models/strong/checkpoints/{p.name}"
                   for p in (REPO / "src/w2sclip/models/strong/checkpoints").iterdir() if p.suffix in (".json", ".safetensors")}
    assert {"w2sclip/models/strong/checkpoints/full.safetensors", "w2sclip/models/strong/checkpoints/full.json",
            "w2sclip/models/strong/checkpoints/limited.safetensors"} <= checkpoints
    must = presets | checkpoints | {"w2sclip/models/strong/configs/w2s-vit-tiny.json",
                                    "w2sclip/models/strong/configs/w2s-rn-tiny.json",
                                    "w2sclip/data/domainnet_classes.py", "w2sclip/cli.py"}
    assert not must - names, f"missing from the wheel: {sorted(must - names)}"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "w2sclip = w2sclip.cli:run" in zipfile.ZipFile(wheel).read(entry).decode()

    site = tmp_path / "site"  # the installed layout: no checkout, no configs/ next to the package
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import w2sclip, w2sclip.config as c; print(w2sclip.__file__); "
            "print(c.resolve_preset('builtin')); print(len(c.list_presets()))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    module, preset, n_presets = res.stdout.split()
    assert module.startswith(str(site)) and preset.startswith(str(site))
    assert int(n_presets) == len(presets)


def test_pretraining_ladder_preset_expands_and_every_rung_has_a_size():
    """126 runs offline (no weights needed to expand and validate); each strong spec parses and
    its pretraining samples seen are known, so every rung lands on the report's log axis."""
    from w2sclip.methods import METHODS
    from w2sclip.models.strong.scale import pretraining_samples
    from w2sclip.models.strong.spec import parse_spec

    runs = load_sweep("pretraining_ladder").runs()
    strongs = sorted({c.strong for c in runs})
    assert len(runs) == 6 * 7 * 3 and {c.weak for c in runs} == {"timm:resnet50"}
    assert set(runs[0].methods) == set(METHODS)
    sizes = {s: pretraining_samples(s) for s in strongs}
    assert all(parse_spec(s).kind == "tag" for s in strongs) and None not in sizes.values()
    vit = sorted(v for s, v in sizes.items() if s.startswith("ViT-B-32:datacomp"))
    assert vit == [12.8e6, 128e6, 12.8e9]


def test_listing_into_a_closed_pipe_is_quiet():
    """`w2sclip list presets | head -1`: no `error: [Errno 32] Broken pipe`, status 0."""
    import subprocess
    import sys

    cmd = f"{sys.executable} -m w2sclip.cli list presets | head -1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("builtin") and "error" not in res.stderr, res
