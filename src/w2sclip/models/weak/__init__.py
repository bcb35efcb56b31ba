"""Weak supervisors by spec ``KIND:ARG`` (the only place importing timm / transformers).

======================  ==============================================================  ===========
spec                    what                                                            trains on GT
======================  ==============================================================  ===========
``timm:NAME``           any timm model, ImageNet weights when available, fine-tuned     yes
``cvt:ID``              transformers CvT (``microsoft/cvt-13``, or a local folder)      yes
``hf:ID``               any transformers ``AutoModelForImageClassification``            yes
``clip:SPEC``           zero-shot predictions of a weaker CLIP (any strong spec)        no
``file:PATH``           bring-your-own logits / probabilities keyed by image path       no
``lowres:ARCH``         the built-in demo's recipe: from scratch at 32 px in memory     yes
======================  ==============================================================  ===========

``get_weak(spec, **options)``; the options of each kind are its dataclass fields
(``WEAK_MODELS[kind]``). Adding a kind = one file + one line here.
"""

from __future__ import annotations

import dataclasses

from w2sclip.models.weak.base import WeakSupervisor
from w2sclip.models.weak.clip_teacher import ClipTeacher
from w2sclip.models.weak.hf_weak import CvtWeak, HFWeak
from w2sclip.models.weak.predictions_file import FileWeak
from w2sclip.models.weak.timm_finetune import TimmWeak
from w2sclip.models.weak.timm_weak import LowResWeak

WEAK_MODELS: dict[str, type[WeakSupervisor]] = {
    "timm": TimmWeak, "cvt": CvtWeak, "hf": HFWeak, "clip": ClipTeacher, "file": FileWeak, "lowres": LowResWeak,
}


def weak_options(kind: str) -> dict:
    """Option name -> default of a weak kind."""
    cls = _kind(kind)
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name != "name"}


def _kind(kind: str) -> type[WeakSupervisor]:
    if kind not in WEAK_MODELS:
        raise KeyError(f"unknown weak kind {kind!r}; valid: {', '.join(WEAK_MODELS)} "
                       f"(a weak spec is KIND:ARG, e.g. timm:resnet18, cvt:microsoft/cvt-13, "
                       f"clip:RN50:yfcc15m, file:/path/preds.csv, lowres:resnet10t)")
    return WEAK_MODELS[kind]


def get_weak_class(spec: str) -> type[WeakSupervisor]:
    """The class of a weak spec's kind (``needs_training`` says whether it reads D_train labels)."""
    return _kind(str(spec).partition(":")[0])


def get_weak(spec: str, **options) -> WeakSupervisor:
    """The weak supervisor of ``spec`` (``KIND:ARG``) with ``options``; unknown options name the valid ones."""
    kind, sep, arg = str(spec).partition(":")
    cls = _kind(kind)
    if not sep or not arg.strip():
        raise ValueError(f"weak spec {spec!r} needs an argument after '{kind}:' (e.g. timm:resnet18)")
    valid = weak_options(kind)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"weak kind {kind!r} has no option(s) {unknown}; valid: {', '.join(valid) or 'none'}")
    return cls(arg.strip(), **options)


__all__ = ["WEAK_MODELS", "WeakSupervisor", "get_weak", "get_weak_class", "weak_options"]
