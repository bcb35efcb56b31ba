"""QuickGELU guard (open_clip issue 771): weights must run with the activation they were trained with.

OpenAI's CLIPs and open_clip's yfcc15m / cc12m RN50s were trained with QuickGELU; LAION and
DataComp ones with GELU. A mismatch loads without any error and silently lowers accuracy. open_clip
3.3's ``ViT-B-32`` + ``openai`` only warns, so for pretrained tags we follow the tag's metadata
(``get_pretrained_cfg(arch, tag)["quick_gelu"]``); for local files we recognise open_clip's
released checkpoints by content hash or by the hub repo in their cache path and refuse a mismatch.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

_SUFFIX = "-quickgelu"
_NAME_HINTS = ("openai", "quickgelu", "yfcc15m", "cc12m")


def arch_quick_gelu(arch: str) -> bool:
    """Whether open_clip's config of ``arch`` uses QuickGELU."""
    import open_clip

    return bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))


def tag_quick_gelu(arch: str, tag: str, name: str = "") -> bool:
    """The activation to build ``arch`` with for pretrained ``tag``: the tag's own (logs a warning
    when that differs from ``arch``'s config, e.g. ``ViT-B-32`` + ``openai``)."""
    import open_clip

    want = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    if want and not arch_quick_gelu(arch):
        log.warning("strong model %r: the %r weights were trained with QuickGELU but open_clip's %s config "
                    "uses GELU; building it with QuickGELU (same as %s%s:%s; open_clip issue 771)",
                    name or f"{arch}:{tag}", tag, arch, arch, _SUFFIX, tag)
    return want


@functools.lru_cache(maxsize=1)
def _known_checkpoints() -> tuple[dict[str, tuple[str, str, bool]], dict[str, tuple[str, str, bool]]]:
    """(sha256 prefix -> (arch, tag, quick_gelu), hub repo id -> (arch, tag, quick_gelu)) of open_clip's tags."""
    from open_clip.pretrained import _PRETRAINED  # the table behind list_pretrained()

    by_sha, by_repo = {}, {}
    for arch, tags in _PRETRAINED.items():
        if arch.endswith(_SUFFIX):
            continue
        for tag, cfg in tags.items():
            entry = (arch, tag, bool(cfg.get("quick_gelu", False)))
            url = cfg.get("url", "")
            if "openaipublic" in url:
                by_sha[url.split("/")[-2]] = entry
            elif "mlfoundations" in url:
                by_sha[Path(url).stem.split("-")[-1]] = entry
            repo = cfg.get("hf_hub", "").strip("/")
            if repo:
                by_repo.setdefault(repo if repo.count("/") == 1 else repo.rsplit("/", 1)[0], entry)
    return by_sha, by_repo


def identify_checkpoint(path: str | Path, sha256: str = "") -> tuple[str, str, bool] | None:
    """(arch, tag, quick_gelu) of an open_clip release recognised by content hash or HF-cache path."""
    by_sha, by_repo = _known_checkpoints()
    if sha256:
        for prefix, entry in by_sha.items():
            if sha256.startswith(prefix[:len(sha256)]):
                return entry
    m = re.search(r"models--(.+?)--([^/\\]+)", str(Path(path).absolute()))
    if m:
        return by_repo.get(f"{m.group(1)}/{m.group(2)}")
    return None


def check_file(name: str, arch: str, path: str | Path, sha256: str = "") -> None:
    """Refuse an architecture whose activation differs from that of a recognised weights file;
    warn when only the file name hints at QuickGELU weights."""
    qg = arch_quick_gelu(arch)
    base = arch.removesuffix(_SUFFIX)
    known = identify_checkpoint(path, sha256)
    if known is not None:
        src_arch, tag, want = known
        if want != qg:
            fix = f"{base}{_SUFFIX}" if want else base
            raise ValueError(f"strong model {name!r}: {Path(path).name} holds open_clip's {src_arch}:{tag} "
                             f"weights, trained with {'QuickGELU' if want else 'GELU'}, but {arch} uses "
                             f"{'QuickGELU' if qg else 'GELU'} (silently lower accuracy, open_clip issue "
                             f"771); use {fix}:{path}")
        return
    hint = [h for h in _NAME_HINTS if h in Path(path).name.lower()]
    if hint and not qg:
        warnings.warn(f"strong model {name!r}: the file name {Path(path).name!r} suggests {hint[0]} weights, "
                      f"usually trained with QuickGELU, but {arch} uses GELU; if so use "
                      f"{base}{_SUFFIX}:{path} (open_clip issue 771)", UserWarning, stacklevel=3)
