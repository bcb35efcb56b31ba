"""Caption profiles of the pretraining corpus (the knobs of the built-in regime, issue 11)."""

import json

import numpy as np
import pytest

from w2sclip.data.builtin import (CAPTIONS, CLASSNAMES, caption_profile, confusion_map,
                                  corpus_caption, corpus_definition)
from w2sclip.data.builtin_render import DOMAINS, STYLE_WORDS


def test_clean_profile_keeps_the_first_checkpoints_captions():
    # the exact captions (and random draws) of the code that made the first shipped checkpoints
    rng = np.random.default_rng(5)
    got = [corpus_caption(np.array([i % 24, i % 6, i % 10]), rng) for i in range(6)]
    assert got == ['circle, photo', 'a clipart showing a square', 'a painting of a yellow triangle',
                   'a sketch showing a star', 'a blue heart', 'a purple arrow']


@pytest.mark.parametrize("domain", DOMAINS)
def test_confusion_map_is_a_fixed_cycle_without_fixed_points(domain):
    for fraction in (0.0, 0.05, 0.35, 0.85, 1.0):
        m = confusion_map(domain, fraction)
        k = int(round(fraction * len(CLASSNAMES)))
        assert len(m) == k and all(c != w for c, w in m.items())
        assert m == confusion_map(domain, fraction)  # deterministic
    # a noisier profile confuses a superset of the classes
    assert set(confusion_map(domain, 0.35)) <= set(confusion_map(domain, 0.6))


def test_web_profile_names_photos_cleanly_and_doodles_badly():
    rng = np.random.default_rng(0)
    confused = confusion_map("quickdraw", CAPTIONS["web"]["quickdraw"].confused)
    caps = {d: [] for d in DOMAINS}
    for i in range(6000):
        label, d = i % len(CLASSNAMES), (i // len(CLASSNAMES)) % len(DOMAINS)
        caps[DOMAINS[d]].append((label, corpus_caption(np.array([label, d, 0]), rng, "web")))

    def names_own(label, text):
        return text.split()[-1].strip(",") == CLASSNAMES[label] or text.startswith(CLASSNAMES[label] + ",")

    real = caps["real"]
    assert np.mean([names_own(lab, t) for lab, t in real]) > 0.85
    doodles = caps["quickdraw"]
    omitted = np.mean([not any(c in t.split() or t.startswith(c + ",") for c in CLASSNAMES) for _, t in doodles])
    assert 0.15 < omitted < 0.25  # omit = 0.2
    for label, text in doodles:
        if label in confused and not text.endswith(STYLE_WORDS["quickdraw"]):
            assert CLASSNAMES[label] not in text.replace(",", " ").split()


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(KeyError, match="valid: clean, web, web-mid, web-noisy, web-noisier"):
        caption_profile("webb")


def test_corpus_definition_hash_changes_with_what_decides_the_corpus():
    from w2sclip.models.strong.pretrain import sha256_json

    base = sha256_json(corpus_definition("web", 80_000, 0, DOMAINS))
    assert base == sha256_json(corpus_definition("web", 80_000, 0, DOMAINS))
    assert base != sha256_json(corpus_definition("web-noisy", 80_000, 0, DOMAINS))
    assert base != sha256_json(corpus_definition("web", 40_000, 0, DOMAINS))
    assert base != sha256_json(corpus_definition("web", 80_000, 0, DOMAINS[:4]))
    json.dumps(corpus_definition("web", 80_000, 0, DOMAINS))  # JSON-clean


def test_pretrain_writes_its_recipe_with_hashes_and_command(tmp_path):
    from w2sclip.models.strong.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(steps=2, batch_size=8, corpus_size=16, captions="web-noisy", seed=3,
                         eval_every=1000, warmup=1, threads=1)
    out = pretrain(cfg, tmp_path / "tiny.safetensors")
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["captions"] == "web-noisy" and recipe["init"] is None and recipe["init_sha256"] is None
    assert len(recipe["corpus_sha256"]) == 64
    assert recipe["command"] == ("w2sclip pretrain --out OUT.safetensors --arch w2s-rn-tiny --steps 2 "
                                 "--batch-size 8 --lr 0.001 --weight-decay 0.1 --warmup 1 --corpus-size 16 "
                                 "--captions web-noisy --world 2 --seed 3 --domains " + ",".join(DOMAINS))
    # the command parses back into the same recipe
    from typer.testing import CliRunner

    from w2sclip import cli
    seen = {}
    import w2sclip.models.strong.pretrain as pt
    monkey = pytest.MonkeyPatch()
    monkey.setattr(pt, "pretrain", lambda c, out: seen.setdefault("cfg", c) and out)
    try:
        args = recipe["command"].split()[2:]
        args[args.index("OUT.safetensors")] = str(tmp_path / "again.safetensors")
        res = CliRunner().invoke(cli.app, ["pretrain", *args])
    finally:
        monkey.undo()
    assert res.exit_code == 0, res.output
    from dataclasses import replace
    got = seen["cfg"]
    assert got == replace(cfg, threads=got.threads, eval_every=got.eval_every)  # logging/threads aside
    assert [h["step"] for h in recipe["history"]] == [2]
    # started from that checkpoint, the recipe records the init file's hash
    cfg2 = PretrainConfig(steps=1, batch_size=8, corpus_size=16, init=str(out), eval_every=1000, threads=1)
    out2 = pretrain(cfg2, tmp_path / "tiny2.safetensors")
    import hashlib
    assert json.loads(out2.with_suffix(".json").read_text())["init_sha256"] == \
        hashlib.sha256(out.read_bytes()).hexdigest()


def test_pretrain_rejects_an_unknown_profile_before_any_work():
    from w2sclip.models.strong.pretrain import PretrainConfig

    with pytest.raises(KeyError, match="valid: clean, web, web-mid, web-noisy, web-noisier"):
        PretrainConfig(captions="noisy")


def test_the_cnn_tower_pretrains_and_loads_as_a_strong_model(tmp_path):
    # w2s-rn-tiny (open_clip ModifiedResNet tower, same text tower as w2s-vit-tiny): the
    # recalibration's architecture candidate (docs/backbones.md, "Regime calibration")
    import torch

    from w2sclip.models.strong.openclip import load_strong
    from w2sclip.models.strong.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(arch="w2s-rn-tiny", steps=1, batch_size=8, corpus_size=16, world=2, eval_every=1000,
                         threads=1)
    out = pretrain(cfg, tmp_path / "rn.safetensors")
    assert "--arch w2s-rn-tiny" in json.loads(out.with_suffix(".json").read_text())["command"]
    strong = load_strong(f"w2s-rn-tiny:{out}")
    assert strong.image_size == 64
    feats = strong.encode_images(torch.zeros(2, 3, 64, 64))
    assert feats.shape == (2, 128) and torch.isfinite(feats).all()
    assert strong.text_weights(["circle", "star"], ["a photo of a {}."]).shape == (2, 128)
