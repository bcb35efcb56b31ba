"""PACS (Li, Yang, Song, Hospedales, ICCV 2017): 7 classes, 4 domains of increasing abstraction.

Layout::

    ROOT/[kfold/|images/kfold/|PACS/]{art_painting,cartoon,photo,sketch}/<class>/<image>
    ROOT/{splits,pacs_label,image_list,.}/<domain>_{train,crossval,test}_kfold.txt   optional

The official files list ``art_painting/dog/pic_001.jpg 1`` with labels counted from 1 (dog=1 ...
person=7); each label is checked against its class folder. ``*_test_kfold.txt`` lists the WHOLE
domain (it is the leave-one-domain-out test set), so it overlaps ``*_train_kfold.txt``: used as
an in-domain test split it would evaluate the weak model on its own training images. Hence, with
the official files: ``train`` = train_kfold, ``test`` = crossval_kfold (the official held-out 10%),
``all`` = test_kfold. Without them (or with ``splits='seeded'``): the seeded stratified 50/50 split.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from w2sclip.data.folder import FixedClassFolders
from w2sclip.data.manifest import ImageDataset
from w2sclip.data.prompts import style_templates
from w2sclip.data.spec import make_dataset
from w2sclip.data.split_files import find_split_file, read_split_file

SPLIT_FILE_DIRS = ("splits", "pacs_label", "image_list", "")
OFFICIAL = {"train": "train", "test": "crossval", "all": "test"}
"""Our split name -> the official file's ``<domain>_<name>_kfold.txt``."""


class PACS(FixedClassFolders):
    """PACS with its official k-fold split files when present."""

    name = "pacs"
    description = "PACS: 7 classes x 4 domains (art_painting, cartoon, photo, sketch)"
    source = "http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017"
    citation = "Li, Yang, Song, Hospedales. Deeper, Broader and Artier Domain Generalization. ICCV 2017"
    domains = ("art_painting", "cartoon", "photo", "sketch")
    classnames = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    domain_folders: ClassVar[dict] = {d: (d,) for d in domains}
    wrappers = ("", "kfold", "images/kfold", "images", "PACS", "PACS/kfold")
    styles: ClassVar[dict] = {"art_painting": "a painting of a {}.", "cartoon": "a cartoon of a {}.",
              "photo": "a photo of a {}.", "sketch": "a sketch of a {}."}
    manual_download = (
        "PACS has no stable direct download URL: follow the authors' page "
        "(http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017, a Google Drive folder) or a mirror, "
        "and unpack it so that ROOT/kfold/art_painting/dog/... exist; put the *_kfold.txt split "
        "files in ROOT/splits/.")

    def official_files(self, root: Path, domain: str) -> dict[str, Path] | None:
        files = {s: find_split_file(root, f"{domain}_{f}_kfold.txt", SPLIT_FILE_DIRS)
                 for s, f in OFFICIAL.items()}
        return files if files["train"] is not None and files["test"] is not None else None

    def split_names(self, root, domain: str) -> tuple[str, ...]:
        files = self.official_files(Path(root), domain)
        return tuple(s for s, f in files.items() if f is not None) if files else ("train", "test")

    def load_domain(self, root: Path, domain: str, split: str, opts: dict,
                    errors: list | None) -> ImageDataset:
        files = self.official_files(root, domain) if opts["splits"] != "seeded" else None
        if opts["splits"] == "official" and files is None:
            raise FileNotFoundError(f"splits='official' but {domain}_train_kfold.txt / "
                                    f"{domain}_crossval_kfold.txt were not found under {root}/"
                                    f"{{{','.join(SPLIT_FILE_DIRS)}}}")
        if files is None:
            return super().load_domain(root, domain, split, {**opts, "splits": "seeded"}, errors)
        image_root = self.domain_dir(root, domain).parent
        index = {c: i for i, c in enumerate(self.classnames)}
        samples = read_split_file(files[split], image_root, domain, index, label_offset=1,
                                  errors=errors)
        return make_dataset(self.name, self.classnames, style_templates(self.styles[domain]),
                            samples, domain, split, root)
