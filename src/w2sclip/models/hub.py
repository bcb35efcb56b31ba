"""Local model caches and offline mode, shared by the strong (open_clip) and weak (timm, transformers) loaders.

Offline mode is on when a loader is called with ``offline=True`` or when ``HF_HUB_OFFLINE`` (or
``TRANSFORMERS_OFFLINE``) is set to a true value. In offline mode the loaders only look into the
local Hugging Face cache (``hf_cache_dir()``) and never open a network connection; a missing file is
a short ``FileNotFoundError`` that names the model, the file and how to provide it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from w2sclip.fileio import file_sha256

_TRUE = {"1", "on", "yes", "true", "y", "t"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_offline(offline: bool = False) -> bool:
    """``offline``, or ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set in the environment (read now)."""
    return bool(offline) or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hf_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face hub cache, resolved from the environment at call time.

    ``cache_dir`` if given, else ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``,
    ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub`` (huggingface_hub's order).
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cached_hf_file(repo_id: str, filenames: list[str] | tuple[str, ...],
                   cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The first of ``filenames`` present in the local cache of hub repo ``repo_id``, or None.

    Reads the cache folder only (``huggingface_hub.try_to_load_from_cache``): no network.
    """
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo_id.partition("@")
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_cache_dir(cache_dir)),
                                       revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def offline_missing(what: str, file_desc: str, download_cmd: str, local_hint: str,
                    cache_dir: str | os.PathLike | None = None) -> FileNotFoundError:
    """The one offline error shape: which model, which file, where we looked, how to provide it."""
    return FileNotFoundError(
        f"{what}: {file_desc} is not in the local cache ({hf_cache_dir(cache_dir)}) and offline mode is "
        f"on; download it on a machine with network ({download_cmd}) and copy the cache, or {local_hint}")


def sha256_file(path: str | os.PathLike, n_hex: int = 16) -> str:
    """Hex digest prefix of a file's content."""
    return file_sha256(path)[:n_hex]


@contextmanager
def hub_offline(offline: bool):
    """While active with ``offline``, every huggingface_hub request fails fast and files come from
    the cache only (huggingface_hub reads ``HF_HUB_OFFLINE`` once at import; this sets it for now)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
