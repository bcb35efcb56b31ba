"""The run-folder format: one type writes it and every reader (report, plots, export) uses it.

``<runs_dir>/<slug>-<digest>/`` holds

=====================  ==========================================================================
``config.json``        ``semantic`` (the digest's fields), ``resolved`` (every field), ``digest``, ``versions``
``records.jsonl``      one record per method, ceiling and the weak model (docs/report.md)
``splits.json``        indices into the readable test-split images: hold, hold_fit, hold_val, test
``predictions.npz``    ``y_true``, ``test_index`` and D_test probabilities per method (float16)
``labels.npz``         exact argmax labels per method, ``y_true``, ``test_index``, image ``paths``
``projection.npz``     a sample of D_test features, their labels, text and learned prototypes
``classnames.json``    the class list; ``strong.json``: the strong model's spec and identity
``fitted/<m>.safetensors``  heads that ``w2sclip export`` can ship (weight, bias, scale)
``bad_files.txt``      unreadable images that were skipped (when any)
``log.jsonl``          machine-readable stage log; ``done``: written last (seconds, stage times)
=====================  ==========================================================================

Every file is written atomically; a folder without ``done`` is unfinished (recomputed; the caches
make that cheap), a folder with ``done`` is never touched again (unless forced); ``run.lock``
makes a second process on the same run wait, then skip it.
"""

from __future__ import annotations

import json
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from w2sclip.fileio import FileLock, atomic_write, disk_full_hint

MOVE_RUNS = "--runs-dir"
"""How to move run folders elsewhere (named in disk-full errors)."""
PROJECTION_SAMPLE = 2000


@dataclass(frozen=True)
class RunFolder:
    """One run folder (finished or not)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ---- state --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def parent(self) -> Path:
        return self.path.parent

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def is_done(self) -> bool:
        return (self.path / "done").exists()

    def is_run(self) -> bool:
        """Whether the folder looks like a run folder (finished or not)."""
        return (self.path / "config.json").exists() or (self.path / "records.jsonl").exists()

    def lock(self) -> FileLock:
        return FileLock(self.path / "run.lock")

    # ---- writing ------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, json.dumps(obj, indent=1).encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Atomic (unique temporary name, then rename): no partial file under ``name``, ever."""
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(data), move=MOVE_RUNS)

    def write_npz(self, name: str, arrays: dict) -> None:
        atomic_write(self.path / name, lambda f: np.savez_compressed(f, **arrays), move=MOVE_RUNS)

    def write_result(self, result, seed: int) -> None:
        """Everything of a finished :class:`~w2sclip.run.RunResult` but ``done``."""
        fit = result.fit
        self.write_json("classnames.json", result.classnames)
        self.write_json("strong.json", {"spec": result.strong_spec, "identity": result.strong_identity})
        self.write_json("splits.json", {k: v.tolist() for k, v in fit.splits.items()})
        test = fit.splits["test"]
        y = result.labels[test]
        index = result.index[test]
        preds = {"y_true": y.astype(np.int64), "test_index": index.astype(np.int64)}
        self.write_npz("predictions.npz", {**preds, **{k: v.astype(np.float16) for k, v in fit.probs.items()}})
        # exact argmax labels (fp16 probabilities can tie): what export/predict must reproduce
        paths = np.array([str(result.paths[i]) for i in test])
        self.write_npz("labels.npz", {**preds, "paths": paths,
                                      **{k: v.argmax(1).astype(np.int64) for k, v in fit.probs.items()}})
        keep = np.sort(np.random.default_rng(seed).permutation(len(test))[:PROJECTION_SAMPLE])
        proj = {"features": np.asarray(result.features[test][keep], dtype=np.float16),
                "labels": y[keep].astype(np.int64), "text_prototypes": result.text_prototypes.astype(np.float32)}
        heads = {name: h for name, h in ((n, linear_head(m)) for n, m in fit.fitted.items()) if h is not None}
        for name, head in heads.items():
            if getattr(fit.fitted[name], "prototypes_", None) is not None and name != "zero_shot":
                proj[name] = head["weight"].astype(np.float32)
            self.write_head(name, head)
        self.write_npz("projection.npz", proj)
        if result.bad_files:
            self.write_bytes("bad_files.txt", "".join(f"{p}\t{r}\n" for p, r in result.bad_files).encode())
        self.write_bytes("records.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in fit.records).encode())

    def write_head(self, name: str, head: dict) -> None:
        from safetensors.numpy import save

        data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in head.items()},
                    metadata={"method": name, "logits": "scale * normalize(x) @ weight.T + bias"})
        self.write_bytes(f"fitted/{name}.safetensors", data)

    def mark_done(self, seconds: float, stages: dict, reused_from: str | None = None) -> None:
        """``done``: when, how long, stage times, and the cache entry the results were copied from
        (``reused_from``, None when they were fitted here)."""
        self.write_json("done", {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 3),
                                 "stages_s": {k: round(v, 3) for k, v in stages.items()},
                                 "reused_from": reused_from})

    # ---- reading ------------------------------------------------------------------------------
    def read_json(self, name: str, default: Any = None) -> Any:
        path = self.path / name
        if not path.exists():
            if default is not None:
                return default
            raise FileNotFoundError(f"{path} is missing; rerun this run (delete its 'done' file) to recompute it")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e}); fix it or rerun that run") from None

    def config(self) -> dict:
        """``config.json`` ({} when absent); anything but a JSON object is a ValueError."""
        cfg = self.read_json("config.json", {})
        if not isinstance(cfg, dict):
            raise ValueError(f"{self.path / 'config.json'}: expected a JSON object (the run's semantic and "
                             f"resolved config), got {json.dumps(cfg)[:40]}; rerun this run (delete its "
                             f"'done' file) to rewrite it")
        return cfg

    def config_value(self, key: str, default=None):
        """A config field, looked up at the top level, then under ``semantic`` / ``resolved``."""
        cfg = self.config()
        for d in (cfg, cfg.get("semantic", {}), cfg.get("resolved", {})):
            if isinstance(d, dict) and key in d:
                return d[key]
        return default

    def records(self, required: tuple[str, ...] = ()) -> list[dict]:
        """The records of a finished run; each must hold the ``required`` fields."""
        if not self.is_done:
            raise FileNotFoundError(f"{self.path} is not a finished run (no 'done' marker); rerun it with "
                                    f"`w2sclip run` or `w2sclip sweep`")
        path = self.path / "records.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{self.path} is marked done but has no records.jsonl; delete its 'done' "
                                    f"file and rerun the sweep to recompute it")
        try:
            text = path.read_text()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); delete the run "
                             f"folder's 'done' file and rerun it") from None
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {i}: not valid JSON ({e.msg}); delete the run folder's "
                                 f"'done' file and rerun it, or fix the line") from None
            missing = [k for k in required if k not in r] if isinstance(r, dict) else list(required)
            if missing:
                raise ValueError(f"{path}, line {i}: record lacks field(s) {missing}; a record needs {list(required)}")
            out.append(r)
        return out

    def classnames(self) -> list[str]:
        return self.read_json("classnames.json", [])

    def strong(self) -> dict:
        return self.read_json("strong.json")

    def head_file(self, method: str) -> Path:
        return self.path / "fitted" / f"{method}.safetensors"

    def heads(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "fitted").glob("*.safetensors"))

    def npz(self, name: str) -> Optional[dict]:
        """Arrays of ``predictions.npz`` / ``labels.npz`` / ``projection.npz`` (None when absent)."""
        path = self.path / name
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            why = ("empty file" if path.stat().st_size == 0 else "not an .npz archive" if "pickle" in str(e)
                   else f"{type(e).__name__}: {(str(e).splitlines() or ['truncated'])[0][:120]}")
            raise ValueError(f"{path} is corrupt ({why}); rerun this run (delete its 'done' file) to "
                             f"rewrite it") from None


class RunLog:
    """Appends JSON events (``{"t", "event", ...}``) to a run's ``log.jsonl`` and times stages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}

    def event(self, event: str, **fields) -> None:
        with disk_full_hint(self.path, MOVE_RUNS), open(self.path, "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}) + "\n")

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        self.event("start", stage=name)
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            self.event("end", stage=name, seconds=round(dt, 3))


def linear_head(method) -> Optional[dict]:
    """``{"weight" (C, D), "bias" (C,), "scale" (1,)}`` when the fitted method is a linear head on
    normalised image features (logits = scale * x @ weight.T + bias), else None."""
    import torch

    protos = getattr(method, "prototypes_", None)
    if protos is not None:
        w = torch.as_tensor(np.asarray(protos.detach() if hasattr(protos, "detach") else protos, dtype=np.float32))
        w = torch.nn.functional.normalize(w, dim=1).numpy()
        return {"weight": w, "bias": np.zeros(len(w), np.float32),
                "scale": np.array([float(method.logit_scale_)], np.float32)}
    coef = getattr(method, "coef_", None)
    if coef is not None and getattr(method, "intercept_", None) is not None:
        return {"weight": coef.detach().numpy().astype(np.float32),
                "bias": method.intercept_.detach().numpy().astype(np.float32),
                "scale": np.array([1.0], np.float32)}
    return None
