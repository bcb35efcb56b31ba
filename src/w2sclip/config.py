"""Typed, frozen experiment configs: defaults -> one optional YAML preset -> ``--set`` overrides.

A :class:`RunConfig` is one run: one dataset domain, one strong model, one weak supervisor, one
seed and a list of methods. A :class:`SweepConfig` is a base run config plus a grid of values;
its runs are the Cartesian product of the grid. Only the *semantic* fields (those that change the
numbers) enter a run's digest; execution fields (device, workers, progress) do not.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from w2sclip.fileio import default_cache_dir, folder_problem

EXECUTION_FIELDS = ("device", "num_workers", "batch_size", "progress", "cache_dir", "shard_size", "reuse_runs")
WEAK_EXECUTION_OPTIONS = ("device", "num_workers", "offline", "cache_dir")


def _did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _registered_methods() -> tuple[str, ...]:
    from w2sclip.methods import METHODS

    return tuple(METHODS)


class RunConfig(BaseModel):
    """One weak-to-strong run (PROTOCOL.md): everything that defines its numbers, and how to execute it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field("builtin", description="dataset name (`w2sclip list datasets`)")
    root: Optional[str] = Field(None, description="dataset folder; for builtin: generated into the cache when unset")
    dataset_options: dict[str, Any] = Field(default_factory=dict,
                                            description="options of the dataset family (docs/datasets.md)")
    builtin_size: Literal["quick", "default"] = Field("default", description="size of the generated built-in benchmark")
    builtin_world: Literal[1, 2] = Field(2, description="world version of the generated built-in benchmark "
                                                        "(2: the shipped checkpoints' world; docs/datasets.md)")
    domain: str = Field(..., description="target domain (D_hold / D_test)")
    source_domain: Optional[str] = Field(None, description="cross-domain protocol: the weak model's training domain")
    strong: str = Field("full", description="strong CLIP spec: full | limited | ARCH:TAG | ARCH:/path | hf-hub:ID")
    weak: str = Field("lowres:resnet10t", description="weak spec: lowres:ARCH | timm:NAME | cvt:ID | hf:ID | clip:SPEC | file:PATH")
    weak_options: dict[str, Any] = Field(default_factory=dict, description="options of the weak supervisor")
    methods: tuple[str, ...] = Field(default_factory=lambda: _registered_methods(),
                                     description="methods to fit (default: every registered method)")
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="per-method hyper-parameter overrides")
    tuning: Literal["grid", "none"] = Field("grid", description="grid: each method's grid picked by the label-free "
                                                               "rule on hold_val (docs/methods.md); none: published defaults")
    seed: int = Field(0, ge=0, lt=2**32,
                      description="seed of the weak model, the splits and the fits (0 <= seed < 2**32)")
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
    reuse_runs: bool = Field(True, description="copy the same run (same inputs, code and libraries) finished "
                                               "in another runs dir from <cache>/runs instead of fitting again")

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
        from w2sclip.methods import METHODS, check_params

        for name, params in v.items():
            valid = METHODS[name].defaults if name in METHODS else None
            bad = [name] if valid is None else sorted(set(params) - set(valid))
            if bad:
                what = "unknown method" if valid is None else f"unknown hyper-parameter(s) of {name!r}"
                raise ValueError(f"{what} {bad}{_did_you_mean(bad[0], METHODS if valid is None else valid)}; valid: "
                                 f"{', '.join(METHODS if valid is None else sorted(valid))}")
            check_params(name, params, "method_params")  # type and range, before any work
        return v

    @model_validator(mode="after")
    def _source_domain(self) -> "RunConfig":
        from w2sclip.models.weak import get_weak_class

        if self.source_domain is not None and not get_weak_class(self.weak).needs_training:
            raise ValueError(f"source_domain is set but the weak model {self.weak!r} is not trained on "
                             f"any domain; drop source_domain (or use a trained weak kind)")
        if self.source_domain == self.domain:
            object.__setattr__(self, "source_domain", None)  # the in-domain protocol, one identity
        return self

    @property
    def protocol(self) -> str:
        """in_domain | cross_domain | weak_clip | byo, derived from the weak spec and source domain."""
        from w2sclip.models.weak import get_weak_class

        kind = get_weak_class(self.weak)
        if not kind.needs_training:
            return kind.protocol
        if self.source_domain and self.source_domain != self.domain:
            return "cross_domain"
        return "in_domain"

    def semantic(self) -> dict:
        """The fields that change the numbers (the run's identity)."""
        d = self.model_dump(mode="json", exclude=set(EXECUTION_FIELDS))
        d["weak_options"] = {k: v for k, v in self.weak_options.items() if k not in WEAK_EXECUTION_OPTIONS}
        d["protocol"] = self.protocol
        if self.dataset != "builtin" or self.builtin_world == 1:
            del d["builtin_world"]  # only the built-in world it names; world 1's digests predate the field
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
        return [make_run_config({**self.base, **dict(zip(keys, values))})
                for values in itertools.product(*(self.grid[k] for k in keys))]


def make_run_config(values: dict[str, Any]) -> RunConfig:
    """Validate ``values`` into a RunConfig; errors name the bad key and the valid ones."""
    try:
        return RunConfig(**values)
    except ValidationError as e:
        raise ValueError(_explain(e, RunConfig)) from None


def _explain(e: ValidationError, model: type[BaseModel]) -> str:
    lines, errors = [], e.errors()
    # a misspelt required key ("domian") reports the typo only, not also "domain: Field required"
    meant = {m for err in errors if err["type"] == "extra_forbidden"
             for m in difflib.get_close_matches(str(err["loc"][0]), list(model.model_fields), n=1)}
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing" and loc in meant:
            continue
        if err["type"] == "extra_forbidden":
            hint = _did_you_mean(str(err["loc"][0]), model.model_fields)
            lines.append(f"unknown config key {loc!r}{hint}; valid keys: {', '.join(model.model_fields)}")
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            msg = str(err["ctx"]["error"])  # our own validators' messages name the key already
            lines.append(msg if not loc or msg.startswith(loc) else f"config key {loc!r}: {msg}")
        else:
            got = err.get("input")
            shown = f", got {got!r}" if err["type"] != "missing" and isinstance(got, (int, float, str)) else ""
            lines.append(f"config key {loc!r}: {err['msg']}{shown}" + _FIXES.get(loc, ""))
    return "; ".join(lines)


_FIXES = {"seed": "; a seed is an integer with 0 <= seed < 2**32 (4294967296)"}
"""The fix appended to a field's type or range error."""


class _Replace:
    """A mapping given whole (``--set 'weak_options={...}'``): it replaces, it does not merge."""

    def __init__(self, value: dict) -> None:
        self.value = value


_DELETE = object()
"""``--set key=null``: remove the key (a run field falls back to its default, e.g. ``{}``)."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["seed=1", "methods=[cpl,kd_lp]", "grid.seed=[0,1]"]`` -> nested dict (values parsed as
    YAML), for :func:`apply_overrides`: ``a.b=V`` updates the mapping ``a``; ``a={...}`` replaces
    it whole; ``a=null`` / ``a.b=null`` removes the key (``a`` falls back to its default)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected key=value, e.g. --set seed=1")
        key, raw = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {pair!r}: {p!r} is set to a value and used as a mapping; set "
                                 f"either {p}=VALUE or {p}.KEY=VALUE")
        try:
            value = read_yaml(raw)
        except yaml.YAMLError as e:
            problem = " ".join(str(getattr(e, "problem", None) or e).split())
            raise ValueError(f"--set {pair!r}: the value is not valid YAML ({problem}); close brackets and "
                             f"quotes, e.g. --set 'methods=[cpl, kd_lp]', or quote a plain string: "
                             f"--set '{key.strip()}=\"...\"'") from None
        whole = len(parts) == 1 or (len(parts) == 2 and parts[0] == "base")
        node[parts[-1]] = _DELETE if value is None else _Replace(value) if whole and isinstance(value, dict) else value
    return out


def apply_overrides(base: dict, parsed: dict) -> dict:
    """``base`` with the overrides of :func:`parse_overrides` applied (see there)."""
    return _merge(base, parsed)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and "
                                f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str):
    """``yaml.safe_load`` that refuses duplicated keys (each preset and ``--set`` value is read by it)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def load_sweep(path: str | Path, overrides: Optional[list[str]] = None) -> SweepConfig:
    """Read a YAML preset (``base`` + ``grid``; a path or a packaged preset name, see
    :func:`resolve_preset`) and apply ``--set`` overrides.

    An override ``key=value`` sets ``base.key`` (and removes ``key`` from the grid, so a single
    value can be forced); ``grid.key=[...]`` replaces a grid axis.
    """
    path = resolve_preset(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8-sig")) or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the preset as "
                         f"UTF-8") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    except OSError as e:
        raise FileNotFoundError(f"config {path} cannot be read ({e.strerror}); pass a readable YAML "
                                f"file or a preset name (`w2sclip list presets`)") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with keys name, description, base, grid")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    raw["base"] = dict(raw.get("base") or {})
    for key, value in parse_overrides(overrides or []).items():
        if key == "grid" and isinstance(value, dict):
            raw["grid"] = _merge(raw.get("grid") or {}, value)
        elif key in SweepConfig.model_fields and key not in ("base", "grid"):
            raw[key] = _merge(None, value)
        else:
            items = value.items() if key == "base" and isinstance(value, dict) else [(key, value)]
            for k, v in items:
                raw["base"] = _merge(raw["base"], {k: v})
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
    """``--set a.b=1`` updates the mapping ``a`` instead of replacing it (recursively); a mapping
    given whole replaces; a removed key is dropped."""
    if isinstance(new, _Replace):
        return new.value
    if isinstance(new, dict):
        out = dict(old) if isinstance(old, dict) else {}
        for k, v in new.items():
            if v is _DELETE:
                out.pop(k, None)
            else:
                out[k] = _merge(out.get(k), v)
        return out
    return None if new is _DELETE else new


def check_runs(runs: list[RunConfig]) -> None:
    """Cheap checks of every run before any work: weak kind and options, strong spec grammar,
    dataset name and (for datasets with a fixed list) domain names."""
    from w2sclip.data import get_spec
    from w2sclip.models.strong.spec import parse_spec

    caches, strongs, datasets = set(), set(), set()
    for cfg in runs:
        check_weak_options(cfg)
        cache = default_cache_dir(cfg.cache_dir)
        if cache not in caches:
            caches.add(cache)
            problem = folder_problem(cache)
            if problem and "is a file" in problem:
                where = "cache_dir" if cfg.cache_dir else "the cache folder (W2SCLIP_CACHE)"
                raise ValueError(f"{where} {cache} cannot be used: {problem}; point cache_dir (or "
                                 f"--cache-dir / W2SCLIP_CACHE) to a folder")
        if cfg.strong not in strongs:
            strongs.add(cfg.strong)
            parse_spec(cfg.strong)
        data = (cfg.dataset, cfg.domain, cfg.source_domain, json.dumps(cfg.dataset_options, sort_keys=True))
        if data not in datasets:
            datasets.add(data)
            spec = get_spec(cfg.dataset)
            spec.resolve_options(dict(cfg.dataset_options))
            domains = spec.domains
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
    if kind == "lowres":
        from w2sclip.models.weak.timm_weak import check_model_kwargs

        check_model_kwargs(cfg.weak_options.get("model_kwargs"))


def _explain_unknown(keys: list[str]) -> str:
    parts = [f"{k!r}{_did_you_mean(k, RunConfig.model_fields)}" for k in keys]
    return f"unknown config key(s) {', '.join(parts)}; valid keys: {', '.join(RunConfig.model_fields)}"


def preset_dir() -> Path:
    """The packaged presets folder (``w2sclip/presets``; a checkout's ``configs/`` links to it)."""
    return Path(str(resources.files("w2sclip") / "presets"))


def list_presets() -> dict[str, str]:
    """Packaged preset names (file stems, sorted) -> their one-line ``description``."""
    out = {}
    for path in sorted(preset_dir().glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        out[path.stem] = str(raw.get("description", "")) if isinstance(raw, dict) else ""
    return out


def resolve_preset(config: str | Path) -> Path:
    """An existing YAML path, else a packaged preset name (``builtin`` or ``builtin.yaml``).

    ``configs/<name>.yaml`` (the spelling of a checkout) also finds the packaged preset when no
    such local file exists, so documented commands work from an installed package.
    """
    path = Path(config).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        inside = ", ".join(p.name for p in sorted(path.glob("*.yaml"))[:5])
        raise FileNotFoundError(f"config {str(config)!r} is a folder, not a YAML file; pass a preset file"
                                + (f" (in it: {inside})" if inside else "") + " or a preset name "
                                "(`w2sclip list presets`)")
    name = path.name.removesuffix(".yaml")
    packaged = preset_dir() / f"{name}.yaml"
    if packaged.is_file() and path.parent in (Path("."), Path("configs")):
        return packaged
    names = ", ".join(p.stem for p in sorted(preset_dir().glob("*.yaml"))) or "none"
    raise FileNotFoundError(f"config {str(config)!r} is neither a YAML file nor a packaged preset; "
                            f"presets: {names} (`w2sclip list presets`)")
