"""Ship a learned classifier without the text encoder (PROTOCOL.md section 3).

An export folder holds ``classifier.safetensors`` (``weight`` (C, D), ``bias`` (C,), ``scale``
(1,)) and ``classifier.json`` (class names, the method, the strong model's spec, identity and
preprocessing, the source run). Logits are ``scale * normalize(f(x)) @ weight.T + bias`` with
``f`` the strong model's image encoder; the text tower is never loaded into the predictor.
"""

from __future__ import annotations

import json
import shutil
from contextlib import suppress
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image

from w2sclip.data.images import IMAGE_EXTENSIONS
from w2sclip.run.fit import softmax
from w2sclip.run.folder import RunFolder

IMAGE_SUFFIXES = IMAGE_EXTENSIONS
"""The suffixes every command treats as images (``data.images.IMAGE_EXTENSIONS``)."""
FORMAT_VERSION = 1


def export_classifier(run_dir: str | Path, out: str | Path, method: str = "cpl") -> Path:
    """Copy the fitted head of ``method`` from a finished run folder into ``out`` with its metadata."""
    run, out = RunFolder(run_dir), Path(out)
    if not run.is_done:
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no 'done' marker); pass a "
                                f"folder made by `w2sclip run`/`w2sclip sweep`")
    head = run.head_file(method)
    if not head.exists():
        raise ValueError(f"method {method!r} has no exportable head in {run.name}; exportable "
                         f"here: {', '.join(run.heads()) or 'none'} (heads on image features only)")
    config, strong = run.config(), run.strong()
    record = next((r for r in run.records() if r["method"] == method), {})
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(head, out / "classifier.safetensors")
    meta = {"format_version": FORMAT_VERSION, "method": method, "classnames": run.classnames(),
            "strong": strong["spec"], "strong_identity": strong["identity"],
            "preprocess": strong["identity"].get("preprocess"),
            "logits": "scale * normalize(image_features) @ weight.T + bias",
            "source_run": run.name, "config": config.get("semantic", {}),
            "test_accuracy": record.get("accuracy"), "hparams": record.get("hparams")}
    (out / "classifier.json").write_text(json.dumps(meta, indent=1))
    return out


class TextFreeClassifier:
    """A prototype / linear head on a frozen CLIP image encoder: no text encoder needed.

    >>> clf = TextFreeClassifier.load("exported/")          # doctest: +SKIP
    >>> clf.predict(["cat.jpg"], top_k=3)                    # doctest: +SKIP
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, scale: float, classnames: list[str],
                 strong, meta: Optional[dict] = None) -> None:
        if weight.shape[0] != len(classnames):
            raise ValueError(f"classifier has {weight.shape[0]} rows but {len(classnames)} class names")
        self.weight, self.bias, self.scale = weight, bias, scale
        self.classnames, self.strong, self.meta = classnames, strong, meta or {}

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", strong_spec: Optional[str] = None,
             check_identity: bool = True) -> "TextFreeClassifier":
        """Read an export folder (checked, see :func:`read_export`) and load only the image tower
        of its strong model; the classifier's D must equal the model's embedding size."""
        from w2sclip.models.strong.openclip import load_strong

        folder = Path(folder)
        meta, t = read_export(folder)
        strong = load_strong(strong_spec or meta["strong"], device=device)
        if check_identity:
            expected = meta.get("strong_identity")
            if not isinstance(expected, dict) or not any(k in expected for k in IDENTITY_KEYS):
                raise ValueError(f"{folder / 'classifier.json'} has no strong_identity, so the weights it was "
                                 f"trained on cannot be checked against {strong.name!r} (another backbone "
                                 f"would predict silently wrong classes); {REEXPORT}, or pass "
                                 f"check_identity=False if you are sure of the weights")
            _check_identity(expected, strong.identity())
        dim = embedding_dim(strong.model)
        if dim is not None and t["weight"].shape[1] != dim:
            raise ValueError(f"{folder / 'classifier.safetensors'}: weight has D = {t['weight'].shape[1]} "
                             f"but the strong model {strong.name!r} embeds images in {dim} dimensions; "
                             f"{REEXPORT}, or pass the strong model it was trained on")
        drop_text_tower(strong.model)
        return cls(t["weight"], t["bias"], float(t["scale"][0]), meta["classnames"], strong, meta)

    def logits_from_features(self, features: np.ndarray) -> np.ndarray:
        """(N, D) image features -> (N, C) logits."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != self.weight.shape[1]:
            raise ValueError(f"features have shape {f.shape} but the classifier expects (N, {self.weight.shape[1]})")
        f = f / np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12)
        return self.scale * f @ self.weight.T + self.bias

    def features(self, images: Iterable, batch_size: int = 64) -> np.ndarray:
        """Normalised image features (N, D) of PIL images or paths."""
        import torch

        out, batch = [], []
        for img in images:
            if not isinstance(img, Image.Image):
                with Image.open(img) as im:
                    img = im.convert("RGB")
            batch.append(self.strong.preprocess(img))
            if len(batch) == batch_size:
                out.append(self.strong.encode_images(torch.stack(batch)).numpy())
                batch = []
        if batch:
            out.append(self.strong.encode_images(torch.stack(batch)).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.weight.shape[1]), np.float32)

    def predict_proba(self, images: Iterable) -> np.ndarray:
        """Class probabilities (N, C)."""
        return softmax(self.logits_from_features(self.features(images)).astype(np.float64)).astype(np.float32)

    def predict(self, images: Iterable) -> np.ndarray:
        """Class indices (N,)."""
        return self.logits_from_features(self.features(images)).argmax(1)


REEXPORT = "re-export it with `w2sclip export RUN_FOLDER --method METHOD --out DIR`"


def read_export(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``classifier.json`` and the arrays of ``classifier.safetensors`` of an export folder,
    checked: finite ``weight`` (C, D), ``bias`` (C,), ``scale`` (1,) > 0, C class names."""
    from safetensors.numpy import load_file

    files = [folder / "classifier.json", folder / "classifier.safetensors"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an exported classifier (missing {missing}); "
                                f"create one with `w2sclip export RUN --method cpl --out DIR`")
    try:
        meta = json.loads(files[0].read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{files[0]}: not valid JSON ({type(e).__name__}: {e}); {REEXPORT}") from None
    names = meta.get("classnames") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names) \
            or not isinstance(meta.get("strong"), str):
        raise ValueError(f"{files[0]}: expected a JSON object with 'classnames' (a list of strings) and "
                         f"'strong' (the strong model spec); {REEXPORT}")
    try:
        t = load_file(str(files[1]))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError...: the file is named either way
        raise ValueError(f"{files[1]}: not a readable safetensors file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'corrupt'}), truncated or corrupt; "
                         f"{REEXPORT}") from None
    absent = [k for k in ("weight", "bias", "scale") if k not in t]
    if absent:
        raise ValueError(f"{files[1]}: missing tensor(s) {absent} (a classifier holds weight, bias and "
                         f"scale); {REEXPORT}")
    weight, bias, scale = (np.asarray(t[k], dtype=np.float32) for k in ("weight", "bias", "scale"))
    c = len(names)
    problems = []
    if weight.ndim != 2 or weight.shape[0] != c or weight.shape[1] < 1:
        problems.append(f"weight has shape {weight.shape}, expected ({c}, D) for the {c} class names of "
                        f"classifier.json")
    if bias.shape != (c,):
        problems.append(f"bias has shape {bias.shape}, expected ({c},)")
    if scale.shape != (1,):
        problems.append(f"scale has shape {scale.shape}, expected (1,)")
    bad = [k for k, v in (("weight", weight), ("bias", bias), ("scale", scale)) if not np.isfinite(v).all()]
    if bad:
        problems.append(f"{' and '.join(bad)} {'hold' if len(bad) > 1 else 'holds'} NaN or infinite values")
    elif scale.shape == (1,) and not scale[0] > 0:
        problems.append(f"scale is {scale[0]:g}, expected a positive number")
    if problems:
        raise ValueError(f"{files[1]}: {'; '.join(problems)}; {REEXPORT}")
    return meta, {"weight": weight, "bias": bias, "scale": scale}


def embedding_dim(model) -> int | None:
    """D of an open_clip model's image embedding (None when the model does not say)."""
    dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if dim is None and getattr(model, "text_projection", None) is not None:
        dim = model.text_projection.shape[-1]
    return int(dim) if dim is not None else None


def drop_text_tower(model) -> None:
    """Remove the text encoder from an open_clip model (the classifier never needs it)."""
    for name in ("transformer", "token_embedding", "ln_final", "text", "positional_embedding", "text_projection"):
        if hasattr(model, name) and name != "visual":
            with suppress(TypeError, AttributeError):
                setattr(model, name, None)


IDENTITY_KEYS = ("arch", "weights_sha256", "pretrained", "preprocess")
"""The strong model's identity fields an exported classifier must match."""


def _check_identity(expected: dict, got: dict) -> None:
    diff = [k for k in IDENTITY_KEYS if k in expected and expected.get(k) != got.get(k)]
    if diff:
        raise ValueError(f"the strong model loaded for this classifier differs from the one it was "
                         f"trained on in {diff}: expected {[expected.get(k) for k in diff]}, got "
                         f"{[got.get(k) for k in diff]}; provide the same weights (strong spec "
                         f"{expected.get('name', '?')!r})")


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files given directly or found (recursively, sorted) under folders."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither an image file nor a folder")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {list(map(str, inputs))}")
    return files


def predict_files(clf: TextFreeClassifier, files: list[Path], top_k: int = 1,
                  batch_size: int = 64) -> tuple[list[dict], list[tuple[str, str]]]:
    """Top-k predictions per readable file, and the (path, reason) of files that could not be read."""
    good, bad = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
            good.append(f)
        except Exception as e:  # noqa: BLE001 - any decode failure is reported, not fatal
            bad.append((str(f), f"{type(e).__name__}: {e}"))
    probs = clf.predict_proba(good) if good else np.zeros((0, len(clf.classnames)))
    k = max(1, min(top_k, len(clf.classnames)))
    rows = []
    for f, p in zip(good, probs):
        top = np.argsort(-p, kind="stable")[:k]
        rows.append({"path": str(f), "label": int(top[0]), "class": clf.classnames[top[0]],
                     "prob": float(p[top[0]]),
                     "top_k": [{"label": int(i), "class": clf.classnames[i], "prob": float(p[i])} for i in top]})
    return rows, bad
