"""The data side of one run: its task (D_train for the weak model, the target's test split).

PROTOCOL.md section 1: the weak supervisor trains on D_train (of the source domain for the
cross-domain protocol; no D_train at all for label-free weak kinds); the official test split of
the target domain is divided into D_hold (hold_fit + hold_val) and D_test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2sclip.config import RunConfig
from w2sclip.data import get_dataset, parse_name
from w2sclip.data.manifest import ImageDataset
from w2sclip.models.weak import get_weak_class


@dataclass(frozen=True)
class Task:
    """One (dataset, target domain): ``train`` is D_train of the weak model (None when the weak
    kind uses no labels), ``test`` the target's official test split."""

    dataset: str
    domain: str
    train: ImageDataset | None
    test: ImageDataset

    @property
    def classnames(self) -> list[str]:
        return self.test.classnames

    @property
    def labels(self) -> np.ndarray:
        """Ground truth of the official test split (read for ceilings and final evaluation only)."""
        return np.asarray(self.test.labels)


def dataset_root(cfg: RunConfig, cache_dir: Path) -> Path | str:
    """The dataset folder: ``cfg.root``, the generated built-in benchmark in the cache, or the
    source of a source-named dataset (``hf:<hub id or folder>``)."""
    family, source = parse_name(cfg.dataset, cfg.root)
    if family != cfg.dataset:
        return source
    if cfg.root:
        root = Path(cfg.root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset root {root} does not exist; set root to the folder "
                                    f"holding {cfg.dataset!r} (see `w2sclip data download` / docs/datasets.md)")
        return root
    if cfg.dataset == "builtin":
        from w2sclip.data.builtin import make_builtin

        return make_builtin(cache_dir / f"builtin-{cfg.builtin_size}-w{cfg.builtin_world}", size=cfg.builtin_size,
                            seed=0, world=cfg.builtin_world)
    raise ValueError(f"dataset {cfg.dataset!r} needs root=<folder>; e.g. --set root=/data/domainnet")


def load_task(cfg: RunConfig, cache_dir: Path) -> Task:
    """The run's task, checked: test images exist, >= 2 classes, same classes as D_train."""
    root = dataset_root(cfg, cache_dir)
    opts = dict(cfg.dataset_options)
    test = get_dataset(cfg.dataset, root=root, domain=cfg.domain, split="test", **opts)
    trains = get_weak_class(cfg.weak).needs_training
    # label-free weak kinds get no D_train at all (no path to ground truth through task.train)
    train = get_dataset(cfg.dataset, root=root, domain=cfg.source_domain or cfg.domain, split="train", **opts) \
        if trains else None
    check = f"check the folder with `w2sclip data check {cfg.dataset} --root {root}`"
    if len(test) == 0:
        raise ValueError(f"{cfg.domain!r} of {cfg.dataset!r} has no test images in {root}; {check}")
    if len(set(test.labels)) < 2:
        raise ValueError(f"domain {cfg.domain!r} of {cfg.dataset!r} has a single class in its test "
                         f"split: a classifier cannot be evaluated; use a dataset with >= 2 classes")
    if train is not None and len(train) == 0:
        raise ValueError(f"{train.domain!r} of {cfg.dataset!r} has no train images in {root}, so the weak "
                         f"model {cfg.weak!r} cannot be trained; {check}, or bring weak predictions "
                         f"(weak=file:PATH)")
    if train is not None and train.classnames != test.classnames:
        raise ValueError(f"the source domain {cfg.source_domain!r} and target {cfg.domain!r} have "
                         f"different class lists; cross-domain needs the same classes")
    return Task(cfg.dataset, cfg.domain, train, test)
