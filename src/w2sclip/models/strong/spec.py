"""Strong-model specs: parse and validate the string that names a CLIP, before any weights are read.

Grammar (``load_strong(spec)``):

- ``full`` / ``limited``: the built-in checkpoints shipped with the package;
- ``ARCH:TAG``: an open_clip architecture and pretrained tag (``ViT-B-32:openai``, ``RN50:cc12m``,
  ``RN50:yfcc15m``, ``ViT-B-32:datacomp_s_s13m_b4k``); ``open_clip.list_pretrained()`` lists them;
- ``ARCH:/path/to/weights.(pt|pth|bin|safetensors)``: a local weights file for ``ARCH``;
- ``ARCH:/path/to/folder``: a folder holding ``open_clip_config.json`` + weights (an HF hub
  snapshot, a ``push_to_hf_hub`` export); the folder's config defines the model;
- ``hf-hub:org/name``: an open_clip model on the Hugging Face hub (config + weights);
- ``ARCH`` or ``ARCH:random``: random initialisation, for offline tests only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from w2sclip.models.strong.builtin import BUILTIN_CHECKPOINTS, register_builtin_archs

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
GRAMMAR = ("a built-in name (full, limited), ARCH:TAG (e.g. ViT-B-32:openai, RN50:cc12m), "
           "ARCH:/path/to/weights.(pt|bin|safetensors), ARCH:/path/to/folder (open_clip_config.json + "
           "weights), hf-hub:org/name, or ARCH:random")


@dataclass(frozen=True)
class StrongSpec:
    """A parsed strong-model spec: ``kind`` (builtin, tag, file, folder, hub or random), the open_clip
    ``arch`` and the weights ``source`` (built-in name, pretrained tag, local path or hub id; empty for
    random weights)."""

    name: str
    kind: str
    arch: str
    source: str = ""


def parse_spec(name: str) -> StrongSpec:
    """Validate ``name`` against the grammar above; errors name the valid options and the fix."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"strong model spec {name!r} is empty; use {GRAMMAR}")
    name = name.strip()
    if name in BUILTIN_CHECKPOINTS:
        return StrongSpec(name, "builtin", BUILTIN_CHECKPOINTS[name], name)
    for prefix in ("hf-hub:", "local-dir:"):
        if name.startswith(prefix):
            rest = name[len(prefix):].strip()
            if prefix == "hf-hub:":
                if rest.count("/") != 1 or rest.startswith("/") or rest.endswith("/"):
                    raise ValueError(f"strong model {name!r}: a hub id is hf-hub:org/name "
                                     f"(e.g. hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K)")
                return StrongSpec(name, "hub", "", rest)
            return _path_spec(name, Path(rest).name, rest)
    arch, _, rest = name.partition(":")
    if _looks_like_path(rest):
        return _path_spec(name, arch, rest)
    _check_arch(name, arch)
    if rest in ("", "random"):
        return StrongSpec(name, "random", arch)
    _check_tag(name, arch, rest)
    return StrongSpec(name, "tag", arch, rest)


def _looks_like_path(rest: str) -> bool:
    return bool(rest) and (rest.startswith(("/", ".", "~")) or "/" in rest or "\\" in rest
                           or rest.lower().endswith(WEIGHT_SUFFIXES) or Path(rest).exists())


def _path_spec(name: str, arch: str, rest: str) -> StrongSpec:
    path = Path(rest).expanduser()
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"strong model {name!r}: folder {path} has no open_clip_config.json; a "
                                    f"folder spec needs open_clip_config.json + weights (like an HF hub "
                                    f"snapshot); for a single weights file use ARCH:/path/to/file")
        return StrongSpec(name, "folder", arch, str(path))
    if not path.is_file():
        raise FileNotFoundError(f"strong model {name!r}: weights {path} not found; give an existing "
                                f"file ({', '.join(WEIGHT_SUFFIXES)}) or folder")
    _check_arch(name, arch)
    return StrongSpec(name, "file", arch, str(path))


def _check_arch(name: str, arch: str) -> None:
    import open_clip

    register_builtin_archs()
    models = open_clip.list_models()
    if arch in models:
        return
    close = difflib.get_close_matches(arch, models, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}; " if close else ""
    raise ValueError(f"strong model {name!r}: unknown open_clip architecture {arch!r}; {hint}all "
                     f"architectures: python -c \"import open_clip; print(open_clip.list_models())\"; "
                     f"a spec is {GRAMMAR}")


def _check_tag(name: str, arch: str, tag: str) -> None:
    import open_clip

    if open_clip.is_pretrained_cfg(arch, tag):
        return
    if arch.endswith("-quickgelu") and open_clip.is_pretrained_cfg(arch[:-len("-quickgelu")], tag):
        base = arch[:-len("-quickgelu")]
        raise ValueError(f"strong model {name!r}: the {tag!r} weights of {base} were trained with GELU, "
                         f"not QuickGELU (open_clip issue 771); use {base}:{tag}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tags:
        raise ValueError(f"strong model {name!r}: open_clip has no pretrained tags for {arch}; use "
                         f"{arch}:/path/to/weights, an hf-hub: id, or {arch}:random (tests only)")
    close = difflib.get_close_matches(tag, tags, n=3, cutoff=0.4)
    hint = f" (close: {', '.join(close)})" if close else ""
    raise ValueError(f"strong model {name!r}: unknown pretrained tag {tag!r} for {arch}{hint}; "
                     f"its tags: {', '.join(tags)}")
