"""Where a strong model's weights come from: a built-in file, an open_clip tag, a local file or
folder, a hub id, or nothing (random). Offline, only the local cache is read."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from w2sclip.models.hub import (
    cached_hf_file,
    hf_cache_dir,
    hub_offline,
    is_offline,
    offline_missing,
    sha256_file,
)
from w2sclip.models.strong.builtin import register_builtin_archs, resolve_checkpoint
from w2sclip.models.strong.quickgelu import check_file, tag_quick_gelu
from w2sclip.models.strong.spec import StrongSpec, parse_spec

_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class Weights:
    """How to build one strong model with ``open_clip.create_model_and_transforms``."""

    arch: str
    tag: str
    """Identity of the weights: built-in file name, pretrained tag, file name or hub id."""
    model_name: str
    """What open_clip gets as ``model_name`` (an architecture or ``local-dir:PATH``)."""
    pretrained: str | None = None
    sha256: str = ""
    force_quick_gelu: bool = False
    preprocess_overlay: dict | None = None
    tokenizer_name: str = ""
    offline: bool = False
    cache_dir: str | None = None

    def preprocess_kwargs(self) -> dict:
        """``image_mean`` etc. for ``create_model_and_transforms``: a tag's own preprocessing."""
        return {f"image_{k}": v for k, v in (self.preprocess_overlay or {}).items()}

    def tokenizer(self):
        """open_clip's tokenizer for this model (local files only when offline)."""
        import open_clip

        with hub_offline(self.offline):
            try:
                return open_clip.get_tokenizer(self.tokenizer_name or self.model_name, cache_dir=self.cache_dir)
            except OSError as e:
                if not self.offline:
                    raise
                raise FileNotFoundError(f"the tokenizer of {self.tokenizer_name or self.model_name} is not in "
                                        f"the local cache ({hf_cache_dir(self.cache_dir)}) and offline mode is "
                                        f"on; load the model once with network and copy the cache ({e})") from None


def resolve_weights(spec: StrongSpec, offline: bool = False, cache_dir: str | None = None) -> Weights:
    """The :class:`Weights` of a parsed spec; offline mode (``offline`` or ``HF_HUB_OFFLINE``) never
    touches the network and raises a short FileNotFoundError for a file missing from the cache."""
    offline = is_offline(offline)
    cache_dir = str(hf_cache_dir(cache_dir))  # read the environment now, not at huggingface_hub's import
    return {"builtin": _builtin, "tag": _tag, "file": _file, "folder": _folder, "hub": _hub,
            "random": _random}[spec.kind](spec, offline, cache_dir)


def _builtin(spec: StrongSpec, offline: bool, cache_dir: str | None) -> Weights:
    register_builtin_archs()
    path = resolve_checkpoint(spec.source)
    return Weights(spec.arch, path.name, spec.arch, str(path), sha256_file(path), offline=offline)


def _tag(spec: StrongSpec, offline: bool, cache_dir: str | None) -> Weights:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
    quick = tag_quick_gelu(spec.arch, spec.source, spec.name)
    overlay = {k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg}
    return Weights(spec.arch, spec.source, spec.arch, _tag_file(spec, cfg, offline, cache_dir), "", quick,
                   overlay, spec.arch, offline, cache_dir)


def _tag_file(spec: StrongSpec, cfg: dict, offline: bool, cache_dir: str | None) -> str:
    """The local weights file of an open_clip tag: from the cache, or downloaded when online."""
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives, download_pretrained

    repo, fname = os.path.split(cfg.get("hf_hub", ""))  # 'org/name/' or 'org/name/file', as open_clip reads it
    fname = fname or HF_WEIGHTS_NAME
    desc = f"weights file {spec.arch}/{spec.source} ({fname} from hf-hub {repo})" if repo else \
        f"weights file {spec.arch}/{spec.source} ({cfg.get('url', '?')})"
    if offline:
        found = cached_hf_file(repo, [*_get_safe_alternatives(fname), fname], cache_dir) if repo else None
        if found is None:
            raise offline_missing(
                f"strong model {spec.name!r}", desc,
                f"python -c \"import open_clip; open_clip.create_model('{spec.arch}', pretrained='{spec.source}')\"",
                f"pass a local file with {spec.arch}:/path/to/weights", cache_dir)
        return str(found)
    try:
        return download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any download failure means the same to the user
        raise FileNotFoundError(f"strong model {spec.name!r}: could not download the {desc}: "
                                f"{str(e).splitlines()[0][:300]}; check the network, or pre-populate the "
                                f"cache and run with --offline / HF_HUB_OFFLINE=1, or pass "
                                f"{spec.arch}:/path/to/weights") from None


def _file(spec: StrongSpec, offline: bool, cache_dir: str | None) -> Weights:
    sha = sha256_file(spec.source)
    check_file(spec.name, spec.arch, spec.source, sha)
    return Weights(spec.arch, Path(spec.source).name, spec.arch, spec.source, sha,
                   tokenizer_name=spec.arch, offline=offline, cache_dir=cache_dir)


def _folder(spec: StrongSpec, offline: bool, cache_dir: str | None) -> Weights:
    from open_clip.factory import (
        _find_checkpoint_in_dir,  # the file open_clip's local-dir loader picks
    )

    folder = Path(spec.source)
    weights = _find_checkpoint_in_dir(folder)
    if weights is None:
        raise FileNotFoundError(f"strong model {spec.name!r}: folder {folder} has open_clip_config.json but no "
                                f"weights (*.safetensors, *.bin, *.pth); copy the weights next to the config")
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    if "model_cfg" not in cfg:
        raise ValueError(f"strong model {spec.name!r}: {folder}/open_clip_config.json has no 'model_cfg'; "
                         f"it must be an open_clip config (as written by open_clip's push_to_hf_hub)")
    name = f"local-dir:{folder}"
    sha = sha256_file(weights)
    return Weights(spec.arch, f"{folder.name}/{Path(weights).name}", name, None, sha,
                   tokenizer_name=name, offline=offline, cache_dir=cache_dir)


def _hub(spec: StrongSpec, offline: bool, cache_dir: str | None) -> Weights:
    from open_clip.pretrained import download_pretrained_from_hf

    repo = spec.source
    if offline:
        config = cached_hf_file(repo, ["open_clip_config.json"], cache_dir)
        weights = cached_hf_file(repo, _HUB_WEIGHTS, cache_dir)
        if config is None or weights is None:
            missing = "open_clip_config.json" if config is None else " or ".join(_HUB_WEIGHTS)
            raise offline_missing(
                f"strong model {spec.name!r}", f"{missing} of hf-hub {repo}",
                f"python -c \"import open_clip; open_clip.create_model('hf-hub:{repo}')\"",
                "pass a local folder with ARCH:/path/to/folder (open_clip_config.json + weights)", cache_dir)
    else:
        try:
            config = Path(download_pretrained_from_hf(repo, filename="open_clip_config.json", cache_dir=cache_dir))
            weights = Path(download_pretrained_from_hf(repo, cache_dir=cache_dir))
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(f"strong model {spec.name!r}: could not download open_clip_config.json and "
                                    f"weights of hf-hub {repo}: {str(e).splitlines()[0][:300]}; check the id "
                                    f"and the network, or pre-populate the cache and use --offline") from None
    if config.parent != weights.parent:
        raise FileNotFoundError(f"strong model {spec.name!r}: the cached config ({config}) and weights "
                                f"({weights}) of hf-hub {repo} are from different revisions; delete the "
                                f"repo from {hf_cache_dir(cache_dir)} and download it again")
    name = f"local-dir:{config.parent}"
    return Weights(repo.rsplit("/", 1)[-1], f"hf-hub:{repo}", name, None, config.parent.name,
                   tokenizer_name=name if offline else f"hf-hub:{repo}", offline=offline, cache_dir=cache_dir)


def _random(spec: StrongSpec, offline: bool, cache_dir: str | None) -> Weights:
    warnings.warn(f"strong model {spec.name!r} has RANDOM weights: every result with it is meaningless "
                  f"(use it for offline tests only; give ARCH:TAG or ARCH:/path/to/weights for real runs)",
                  UserWarning, stacklevel=3)
    return Weights(spec.arch, "random", spec.arch, None, tokenizer_name=spec.arch, offline=offline,
                   cache_dir=cache_dir)


def spec_identity(name: str) -> dict:
    """Identity of a strong spec without building the model: kind, arch, source and, for local
    weights (built-in, file, folder), a content hash. Never downloads."""
    spec = parse_spec(name)
    ident = {"kind": spec.kind, "arch": spec.arch, "source": spec.source}
    if spec.kind == "builtin":
        ident["sha256"] = sha256_file(resolve_checkpoint(spec.source))
    elif spec.kind == "file":
        ident["sha256"] = sha256_file(spec.source)
    elif spec.kind == "folder":
        from open_clip.factory import _find_checkpoint_in_dir

        weights = _find_checkpoint_in_dir(Path(spec.source))
        ident["sha256"] = sha256_file(weights) if weights else ""
    return ident
