"""Methods: one file each, registered by name in ``METHODS`` (name -> estimator class)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w2sclip.methods.adaptconf import AdaptConf
from w2sclip.methods.base import Method, NotFittedError
from w2sclip.methods.clip_adapter import CLIPAdapter
from w2sclip.methods.coop import CoOp, CoOpEnsemble
from w2sclip.methods.cpl import CPL, CPLHard
from w2sclip.methods.cpl_poe import CPLPoE
from w2sclip.methods.kd_lp import KDLinearProbe
from w2sclip.methods.logconf import LogConf
from w2sclip.methods.params import _shown, validate
from w2sclip.methods.product_loss import ProductLoss
from w2sclip.methods.tip_adapter_f import TipAdapter, TipAdapterF
from w2sclip.methods.zero_shot import ZeroShot

METHODS: dict[str, type[Method]] = {
    "zero_shot": ZeroShot,
    "cpl": CPL,
    "cpl_hard": CPLHard,
    "cpl_poe": CPLPoE,
    "kd_lp": KDLinearProbe,
    "logconf": LogConf,
    "adaptconf": AdaptConf,
    "product_loss": ProductLoss,
    "tip_adapter": TipAdapter,
    "tip_adapter_f": TipAdapterF,
    "clip_adapter": CLIPAdapter,
    "coop": CoOp,
    "coop_ensemble": CoOpEnsemble,
}


def get_method(name: str, **params) -> Method:
    """Instantiate a registered method; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name](**params)


def check_params(name: str, params: Mapping[str, Any], prefix: str = "method_params") -> dict[str, Any]:
    """Check one method's hyper-parameters (as a config gives them) without building it.

    Unknown method names and unknown keys raise ValueError listing the valid ones; a value of
    the wrong type or out of range raises ``"{prefix}.{name}.{key}: must be ..., got ..."``.
    Returns the full parameter dict (defaults filled in).
    """
    where = f"{prefix}.{name}" if prefix else name
    if name not in METHODS:
        raise ValueError(f"{prefix + ': ' if prefix else ''}unknown method {name!r}; valid: {', '.join(METHODS)}")
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: must be a mapping of hyper-parameters, got {_shown(params)}")
    cls = METHODS[name]
    unknown = sorted(set(params) - set(cls.defaults))
    if unknown:
        raise ValueError(f"{where}: unknown hyper-parameter(s) {unknown}; valid: {sorted(cls.defaults)}")
    validate(params, cls.constraints, where)
    return {**cls.defaults, **params}


__all__ = ["METHODS", "Method", "NotFittedError", "check_params", "get_method"]
