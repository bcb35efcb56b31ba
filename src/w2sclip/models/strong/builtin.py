"""The built-in CLIP: open_clip architectures registered from JSON, and the shipped checkpoints."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
BUILTIN_CHECKPOINTS = {"full": "w2s-rn-tiny", "limited": "w2s-rn-tiny"}
"""Shipped checkpoint name -> its open_clip architecture."""

_registered = False


def register_builtin_archs() -> None:
    """Make the built-in architectures known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def resolve_checkpoint(name_or_path: str) -> Path:
    """A shipped checkpoint name (``full``/``limited``) or a path -> an existing file path."""
    if name_or_path in BUILTIN_CHECKPOINTS:
        path = CHECKPOINT_DIR / f"{name_or_path}.safetensors"
        if not path.exists():
            raise FileNotFoundError(
                f"built-in checkpoint {name_or_path!r} is missing at {path}; reinstall w2sclip or "
                f"recreate it with the command in docs/backbones.md")
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {name_or_path!r} not found; give a file path or one of "
                                f"the built-in names: {', '.join(BUILTIN_CHECKPOINTS)}")
    return path
