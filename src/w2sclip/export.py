"""Ship a learned classifier without the text encoder (PROTOCOL.md section 3).

An export folder holds ``classifier.safetensors`` (``weight`` (C, D), ``bias`` (C,), ``scale``
(1,)) and ``classifier.json`` (class names, the method, the strong model's spec, identity and
preprocessing, the source run). Logits are ``scale * normalize(f(x)) @ weight.T + bias`` with
``f`` the strong model's image encoder; the text tower is never loaded into the predictor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMAT_VERSION = 1


def export_classifier(run_dir: str | Path, out: str | Path, method: str = "cpl") -> Path:
    """Copy the fitted head of ``method`` from a finished run folder into ``out`` with its metadata."""
    from w2sclip.runs import is_done, load_records

    run_dir, out = Path(run_dir), Path(out)
    if not is_done(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no 'done' marker); pass a "
                                f"folder made by `w2sclip run`/`w2sclip sweep`")
    head = run_dir / "fitted" / f"{method}.safetensors"
    if not head.exists():
        have = sorted(p.stem for p in (run_dir / "fitted").glob("*.safetensors"))
        raise ValueError(f"method {method!r} has no exportable head in {run_dir.name}; exportable "
                         f"here: {', '.join(have) or 'none'} (heads on image features only)")
    config = json.loads((run_dir / "config.json").read_text())
    strong = json.loads((run_dir / "strong.json").read_text())
    record = next((r for r in load_records(run_dir) if r["method"] == method), {})
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(head, out / "classifier.safetensors")
    meta = {"format_version": FORMAT_VERSION, "method": method,
            "classnames": json.loads((run_dir / "classnames.json").read_text()),
            "strong": strong["spec"], "strong_identity": strong["identity"],
            "preprocess": strong["identity"].get("preprocess"),
            "logits": "scale * normalize(image_features) @ weight.T + bias",
            "source_run": run_dir.name, "config": config["semantic"],
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
        """Read an export folder and load only the image tower of its strong model."""
        from safetensors.numpy import load_file

        from w2sclip.models.strong.openclip import load_strong

        folder = Path(folder)
        files = [folder / "classifier.json", folder / "classifier.safetensors"]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not an exported classifier (missing {missing}); "
                                    f"create one with `w2sclip export RUN --method cpl --out DIR`")
        meta = json.loads(files[0].read_text())
        t = load_file(str(files[1]))
        strong = load_strong(strong_spec or meta["strong"], device=device)
        if check_identity:
            _check_identity(meta.get("strong_identity", {}), strong.identity())
        drop_text_tower(strong.model)
        return cls(t["weight"], t["bias"], float(t["scale"][0]), meta["classnames"], strong, meta)

    def logits_from_features(self, features: np.ndarray) -> np.ndarray:
        """(N, D) image features -> (N, C) logits."""
        f = np.asarray(features, dtype=np.float32)
        f = f / np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12)
        return self.scale * f @ self.weight.T + self.bias

    def features(self, images: Iterable, batch_size: int = 64) -> np.ndarray:
        """Normalised image features (N, D) of PIL images or paths."""
        import torch
        from PIL import Image

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
        z = self.logits_from_features(self.features(images)).astype(np.float64)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def predict(self, images: Iterable) -> np.ndarray:
        """Class indices (N,)."""
        return self.logits_from_features(self.features(images)).argmax(1)


def drop_text_tower(model) -> None:
    """Remove the text encoder from an open_clip model (the classifier never needs it)."""
    for name in ("transformer", "token_embedding", "ln_final", "text", "positional_embedding", "text_projection"):
        if hasattr(model, name) and name != "visual":
            try:
                setattr(model, name, None)
            except (TypeError, AttributeError):
                pass


def _check_identity(expected: dict, got: dict) -> None:
    keys = ("arch", "weights_sha256", "pretrained", "preprocess")
    diff = [k for k in keys if k in expected and expected.get(k) != got.get(k)]
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
    from PIL import Image

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
