"""Hyper-parameter constraints: type and range of every method's keys, checked early.

Modelled on scikit-learn's ``_parameter_constraints``: each method class declares
``constraints = {key: [constraint, ...]}``; a value is valid when it satisfies any constraint of
its key. ``Method.__init__`` checks its keyword arguments, and ``check_params(name, params)``
checks a config's ``method_params`` entry before any work starts, naming the key::

    method_params.cpl.lr: must be a float in (0, inf), got -1
    method_params.cpl.epochs: must be None or an int in [0, inf), got 'ten' (str)

Booleans are not numbers here (``True`` is not an int), integers are accepted where a float is
expected, and strings are never converted (``"1e-3"`` is a string: YAML 1.1 reads ``1e-3``
without a dot as text; write ``1.0e-3``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TYPE_NAMES = {int: "an int", float: "a float", str: "a string", bool: "a bool"}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Interval:
    """A number of ``type`` (int or float) in [low, high]; None is an open end. ``closed`` is
    "both", "left", "right" or "neither" (as scikit-learn's ``Interval``)."""

    type: type
    low: float | None
    high: float | None
    closed: str = "both"

    def __post_init__(self) -> None:
        if self.type not in (int, float) or self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"bad Interval({self.type!r}, closed={self.closed!r})")

    def is_satisfied_by(self, v: Any) -> bool:
        if not (_is_int(v) if self.type is int else _is_real(v)) or (self.type is float and math.isnan(v)):
            return False
        if self.low is not None and (v < self.low or (v == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (v > self.high or (v == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def __str__(self) -> str:
        fmt = (lambda v: str(int(v))) if self.type is int else (lambda v: f"{v:g}")
        lo = "-inf" if self.low is None else fmt(self.low)
        hi = "inf" if self.high is None else fmt(self.high)
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        return f"{_TYPE_NAMES[self.type]} in {left}{lo}, {hi}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values of ``type``."""

    type: type
    options: tuple

    def is_satisfied_by(self, v: Any) -> bool:
        return isinstance(v, self.type) and not (self.type is not bool and isinstance(v, bool)) \
            and v in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class TypeOf:
    """Any value of ``type`` (a non-empty string when ``type`` is str and ``nonempty``)."""

    type: type
    nonempty: bool = False

    def is_satisfied_by(self, v: Any) -> bool:
        if self.type is bool:
            return isinstance(v, bool)
        return isinstance(v, self.type) and not isinstance(v, bool) and not (self.nonempty and not v)

    def __str__(self) -> str:
        return ("a non-empty string" if self.nonempty and self.type is str
                else _TYPE_NAMES.get(self.type, self.type.__name__))


@dataclass(frozen=True)
class PairOf:
    """A list (or tuple) of two values, each satisfying ``item`` (e.g. Tip-Adapter's
    ``search_scale``)."""

    item: Interval

    def is_satisfied_by(self, v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) == 2 and all(self.item.is_satisfied_by(x) for x in v)

    def __str__(self) -> str:
        return f"a list of two values, each {self.item}"


class _NoneConstraint:
    def is_satisfied_by(self, v: Any) -> bool:
        return v is None

    def __str__(self) -> str:
        return "None"


NONE = _NoneConstraint()
BOOL = TypeOf(bool)
POSITIVE = Interval(float, 0, None, closed="neither")
NON_NEGATIVE = Interval(float, 0, None, closed="left")
UNIT = Interval(float, 0, 1, closed="both")
SEED = Interval(int, 0, 2**32 - 1)
"""Seeds: 0 <= seed < 2^32 (numpy's and torch's seed range)."""


def _as_list(c) -> list:
    if c is None:
        return [NONE]
    return list(c) if isinstance(c, (list, tuple)) else [c]


def describe(constraints) -> str:
    """``"None or an int in [0, inf)"``."""
    return " or ".join(str(c) for c in _as_list(constraints))


def _shown(v: Any) -> str:
    return repr(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and type(v) in (int, float) \
        else f"{v!r} ({type(v).__name__})"


def validate(params: Mapping[str, Any], constraints: Mapping[str, Any], where: str) -> None:
    """Raise ValueError ``"<where>.<key>: must be ..., got ..."`` for the first invalid value.

    Keys without a constraint are errors too (every hyper-parameter must declare one).
    """
    for key, value in params.items():
        if key not in constraints:
            raise ValueError(f"{where}.{key}: no constraint declared for this hyper-parameter")
        cs = _as_list(constraints[key])
        if not any(c.is_satisfied_by(value) for c in cs):
            raise ValueError(f"{where}.{key}: must be {describe(cs)}, got {_shown(value)}")
