"""Typed, frozen experiment configs: defaults -> one optional YAML preset -> ``--set`` overrides.

A :class:`RunConfig` is one run: one dataset domain, one strong model, one weak supervisor, one
seed and a list of methods. A :class:`SweepConfig` is a base run config plus a grid of values;
its runs are the Cartesian product of the grid. Only the *semantic* fields (those that change the
numbers) enter a run's digest; execution fields (device, workers, progress) do not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROTOCOLS = ("in_domain", "cross_domain", "weak_clip", "byo")
EXECUTION_FIELDS = ("device", "num_workers", "batch_size", "progress", "cache_dir", "shard_size")
WEAK_EXECUTION_OPTIONS = ("device", "num_workers", "offline", "cache_dir")


class RunConfig(BaseModel):
    """One weak-to-strong run (PROTOCOL.md): everything that defines its numbers, and how to execute it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field("builtin", description="dataset name (`w2sclip list datasets`)")
    root: Optional[str] = Field(None, description="dataset folder; for builtin: generated into the cache when unset")
    builtin_size: Literal["quick", "default"] = Field("default", description="size of the generated built-in benchmark")
    domain: str = Field(..., description="target domain (D_hold / D_test)")
    source_domain: Optional[str] = Field(None, description="cross-domain protocol: the weak model's training domain")
    strong: str = Field("full", description="strong CLIP spec: full | limited | ARCH:TAG | ARCH:/path | hf-hub:ID")
    weak: str = Field("lowres:resnet10t", description="weak spec: lowres:ARCH | timm:NAME | cvt:ID | hf:ID | clip:SPEC | file:PATH")
    weak_options: dict[str, Any] = Field(default_factory=dict, description="options of the weak supervisor")
    methods: tuple[str, ...] = Field(("zero_shot", "kd_lp", "cpl", "cpl_hard", "cpl_poe", "logconf",
                                      "adaptconf", "tip_adapter_f", "clip_adapter", "coop"))
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="per-method hyper-parameter overrides")
    seed: int = 0
    hold_fraction: float = Field(0.5, gt=0, lt=1, description="share of the official test split that becomes D_hold")
    fit_fraction: float = Field(0.8, gt=0, lt=1, description="share of D_hold used for fitting (rest: hold_val)")
    feature_dtype: Literal["float32", "float16"] = "float32"
    bad_files: Literal["skip", "error"] = Field("skip", description="unreadable images: skip and list them, or stop")
    # execution only (not in the digest)
    device: str = "cpu"
    num_workers: int = 0
    batch_size: int = 256
    shard_size: int = 4096
    progress: bool = True
    cache_dir: Optional[str] = None

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from w2sclip.methods import METHODS

        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")
        if not v:
            raise ValueError("methods is empty; name at least one (see `w2sclip list methods`)")
        return tuple(v)

    @field_validator("method_params")
    @classmethod
    def _known_method_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        import difflib

        from w2sclip.methods import METHODS

        for name, params in v.items():
            valid = METHODS[name].defaults if name in METHODS else None
            bad = [name] if valid is None else sorted(set(params) - set(valid))
            if bad:
                close = difflib.get_close_matches(bad[0], list(METHODS) if valid is None else list(valid), n=1)
                what = "unknown method" if valid is None else f"unknown hyper-parameter(s) of {name!r}"
                raise ValueError(f"{what} {bad}{f' (did you mean {close[0]!r}?)' if close else ''}; valid: "
                                 f"{', '.join(METHODS if valid is None else sorted(valid))}")
        return v

    @model_validator(mode="after")
    def _source_domain(self) -> "RunConfig":
        if self.source_domain is not None and (self.weak.startswith("clip:") or self.weak.startswith("file:")):
            raise ValueError(f"source_domain is set but the weak model {self.weak!r} is not trained on "
                             f"any domain; drop source_domain (or use a trained weak kind)")
        if self.source_domain == self.domain:
            object.__setattr__(self, "source_domain", None)  # the in-domain protocol, one identity
        return self

    @property
    def protocol(self) -> str:
        """in_domain | cross_domain | weak_clip | byo, derived from the weak spec and source domain."""
        if self.weak.startswith("clip:"):
            return "weak_clip"
        if self.weak.startswith("file:"):
            return "byo"
        if self.source_domain and self.source_domain != self.domain:
            return "cross_domain"
        return "in_domain"

    def semantic(self) -> dict:
        """The fields that change the numbers (the run's identity)."""
        d = self.model_dump(mode="json", exclude=set(EXECUTION_FIELDS))
        d["weak_options"] = {k: v for k, v in self.weak_options.items() if k not in WEAK_EXECUTION_OPTIONS}
        d["protocol"] = self.protocol
        return d

    def digest(self) -> str:
        """Short SHA-256 of the canonical JSON of :meth:`semantic`."""
        blob = json.dumps(self.semantic(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def slug(self) -> str:
        """Readable run-folder prefix: dataset-domain-strong-weak-seed."""
        src = f"from-{self.source_domain}-" if self.protocol == "cross_domain" else ""
        raw = f"{self.dataset}-{src}{self.domain}-{self.strong}-{self.weak}-s{self.seed}"
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)[:80]


class SweepConfig(BaseModel):
    """A base :class:`RunConfig` (minus the grid fields) and a grid of values to cross."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "sweep"
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _grid_fields(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        bad = [k for k in v if k not in RunConfig.model_fields]
        if bad:
            raise ValueError(f"unknown grid key(s) {bad}; valid: {', '.join(RunConfig.model_fields)}")
        empty = [k for k, vals in v.items() if not isinstance(vals, list) or not vals]
        if empty:
            raise ValueError(f"grid key(s) {empty} need a non-empty list of values")
        return v

    def runs(self) -> list[RunConfig]:
        """Every run of the grid, in a stable order (grid keys in file order)."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            out.append(make_run_config({**self.base, **dict(zip(keys, values))}))
        return out


def make_run_config(values: dict[str, Any]) -> RunConfig:
    """Validate ``values`` into a RunConfig; errors name the bad key and the valid ones."""
    try:
        return RunConfig(**values)
    except ValidationError as e:
        raise ValueError(_explain(e, RunConfig)) from None


def _explain(e: ValidationError, model: type[BaseModel]) -> str:
    import difflib

    lines, errors = [], e.errors()
    # a misspelt required key ("domian") reports the typo only, not also "domain: Field required"
    meant = {m for err in errors if err["type"] == "extra_forbidden"
             for m in difflib.get_close_matches(str(err["loc"][0]), list(model.model_fields), n=1)}
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing" and loc in meant:
            continue
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][0]), list(model.model_fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown config key {loc!r}{hint}; valid keys: {', '.join(model.model_fields)}")
        else:
            lines.append(f"config key {loc!r}: {err['msg']}")
    return "; ".join(lines)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["seed=1", "methods=[cpl,kd_lp]", "grid.seed=[0,1]"]`` -> nested dict (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected key=value, e.g. --set seed=1")
        key, raw = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_sweep(path: str | Path, overrides: Optional[list[str]] = None) -> SweepConfig:
    """Read a YAML preset (``base`` + ``grid``) and apply ``--set`` overrides.

    An override ``key=value`` sets ``base.key`` (and removes ``key`` from the grid, so a single
    value can be forced); ``grid.key=[...]`` replaces a grid axis.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        presets = sorted(p.name for p in preset_dir().glob("*.yaml")) if preset_dir().exists() else []
        raise FileNotFoundError(f"config {path} not found; presets in configs/: {', '.join(presets) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with keys name, description, base, grid")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    raw["base"] = dict(raw.get("base") or {})
    for key, value in parse_overrides(overrides or []).items():
        if key == "grid" and isinstance(value, dict):
            raw.setdefault("grid", {}).update(value)
        elif key in SweepConfig.model_fields and key not in ("base", "grid"):
            raw[key] = value
        else:
            items = value.items() if key == "base" and isinstance(value, dict) else [(key, value)]
            for k, v in items:
                raw["base"][k] = _merge(raw["base"].get(k), v)
                (raw.get("grid") or {}).pop(k, None)
    try:
        sweep = SweepConfig(**raw)
    except ValidationError as e:
        raise ValueError(f"{path}: {_explain(e, SweepConfig)}") from None
    bad = [k for k in sweep.base if k not in RunConfig.model_fields]
    if bad:
        raise ValueError(f"{path}: " + _explain_unknown(bad))
    check_runs(sweep.runs())  # before any work starts
    return sweep


def _merge(old: Any, new: Any) -> Any:
    """``--set a.b=1`` updates the mapping ``a`` instead of replacing it (recursively)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return new


def check_runs(runs: list[RunConfig]) -> None:
    """Cheap checks of every run before any work: weak kind and options, strong spec grammar,
    dataset name and (for datasets with a fixed list) domain names."""
    from w2sclip.data import get_spec
    from w2sclip.models.strong.spec import parse_spec

    seen: set = set()
    for cfg in runs:
        check_weak_options(cfg)
        for item in (("strong", cfg.strong), ("dataset", cfg.dataset, cfg.domain, cfg.source_domain)):
            if item in seen:
                continue
            seen.add(item)
            if item[0] == "strong":
                parse_spec(cfg.strong)
                continue
            domains = get_spec(cfg.dataset).domains
            for d in (cfg.domain, cfg.source_domain):
                if d is not None and domains and d not in domains:
                    raise KeyError(f"unknown domain {d!r} for {cfg.dataset}; valid: {', '.join(domains)}")


def check_weak_options(cfg: RunConfig) -> None:
    """The weak spec's kind exists and ``weak_options`` are options of that kind."""
    from w2sclip.models.weak import weak_options

    kind = cfg.weak.partition(":")[0]
    valid = weak_options(kind)  # KeyError listing the kinds
    unknown = sorted(set(cfg.weak_options) - set(valid))
    if unknown:
        raise ValueError(f"weak_options {unknown} are not options of weak kind {kind!r}; valid: "
                         f"{', '.join(valid)}")


def _explain_unknown(keys: list[str]) -> str:
    import difflib

    parts = []
    for k in keys:
        close = difflib.get_close_matches(k, list(RunConfig.model_fields), n=1)
        parts.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown config key(s) {', '.join(parts)}; valid keys: {', '.join(RunConfig.model_fields)}"


def preset_dir() -> Path:
    """The repository's ``configs/`` folder (presets)."""
    return Path(__file__).resolve().parents[2] / "configs"
