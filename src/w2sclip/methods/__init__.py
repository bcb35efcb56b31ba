"""Methods: one file each, registered by name in ``METHODS`` (name -> estimator class)."""

from __future__ import annotations

from w2sclip.methods.adaptconf import AdaptConf
from w2sclip.methods.base import Method, NotFittedError
from w2sclip.methods.clip_adapter import CLIPAdapter
from w2sclip.methods.coop import CoOp
from w2sclip.methods.cpl import CPL, CPLHard
from w2sclip.methods.cpl_poe import CPLPoE
from w2sclip.methods.kd_lp import KDLinearProbe
from w2sclip.methods.logconf import LogConf
from w2sclip.methods.tip_adapter_f import TipAdapterF
from w2sclip.methods.zero_shot import ZeroShot

METHODS: dict[str, type[Method]] = {
    "zero_shot": ZeroShot,
    "cpl": CPL,
    "cpl_hard": CPLHard,
    "cpl_poe": CPLPoE,
    "kd_lp": KDLinearProbe,
    "logconf": LogConf,
    "adaptconf": AdaptConf,
    "tip_adapter_f": TipAdapterF,
    "clip_adapter": CLIPAdapter,
    "coop": CoOp,
}


def get_method(name: str, **params) -> Method:
    """Instantiate a registered method; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name](**params)


__all__ = ["METHODS", "Method", "NotFittedError", "get_method"]
