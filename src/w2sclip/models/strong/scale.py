"""How much pretraining a strong model has seen: image-text samples, for the pretraining ladder.

The paper's claim is about the amount of pretraining, so the report can put each method's gain
on a log axis of samples seen (``report.ladder_section``, ``plots.ladder_figure``). The numbers
come from the checkpoints' own documentation:

- ``ViT-B-32:datacomp_{s,m,xl}_*``: the tag names the samples seen (s13m = 12.8M, s128m = 128M,
  s13b = 12.8B; Gadre et al. 2023, DataComp, Table 3: the small/medium/xlarge scales).
- ``*:openai``: 400M pairs x 32 epochs = 12.8B (Radford et al. 2021, section 2.5).
- ``RN50:yfcc15m`` / ``RN50:cc12m``: open_clip's RN50 runs, 32 epochs over the pairs the authors
  had (~15M and ~10M): about 480M and 320M (open_clip README; approximate).
- the built-in checkpoints: ``steps x batch_size`` from their JSON, plus their init's.
"""

from __future__ import annotations

import json

from w2sclip.models.strong.builtin import BUILTIN_CHECKPOINTS, CHECKPOINT_DIR

SAMPLES_SEEN: dict[str, float] = {
    "ViT-B-32:datacomp_s_s13m_b4k": 12.8e6,
    "ViT-B-32:datacomp_m_s128m_b4k": 128e6,
    "ViT-B-32:datacomp_xl_s13b_b90k": 12.8e9,
    "ViT-B-32:openai": 12.8e9,
    "ViT-B-16:openai": 12.8e9,
    "ViT-L-14:openai": 12.8e9,
    "RN50:openai": 12.8e9,
    "RN101:openai": 12.8e9,
    "RN50:yfcc15m": 480e6,
    "RN50:cc12m": 320e6,
}
"""Pretraining samples seen per ``ARCH:TAG`` strong spec (approximate where the module says so)."""


def pretraining_samples(strong: str) -> float | None:
    """Samples seen in pretraining by the strong model ``strong`` (a spec string), or None when unknown.

    Known tags come from :data:`SAMPLES_SEEN` (``-quickgelu`` variants share their tag's number);
    the built-in checkpoints count ``steps x batch_size`` of their recipe and of the checkpoint
    they were initialised from. Random weights have seen 0 samples."""
    if strong in BUILTIN_CHECKPOINTS:
        return _builtin_samples(strong, CHECKPOINT_DIR, set())
    arch, _, tag = strong.partition(":")
    if tag == "random":
        return 0.0
    return SAMPLES_SEEN.get(f"{arch.removesuffix('-quickgelu')}:{tag}")


def _builtin_samples(name: str, folder, seen: set) -> float | None:
    meta_path = folder / f"{name}.json"
    if name in seen or not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta.get("steps"), int) or not isinstance(meta.get("batch_size"), int):
        return None
    own = float(meta["steps"] * meta["batch_size"])
    init = meta.get("init")
    if not init:
        return own
    before = _builtin_samples(init, folder, seen | {name})
    return None if before is None else own + before
