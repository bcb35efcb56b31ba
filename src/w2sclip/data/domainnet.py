"""DomainNet (Peng et al., ICCV 2019): 345 classes, 6 domains, official train/test split files.

Layout::

    ROOT/<domain>/<class>/<image>.jpg                     images (as unpacked from <domain>.zip)
    ROOT/{splits,image_list,.}/<domain>_{train,test}.txt  official split files, searched in this order

Labels follow the official order (``DOMAINNET_CLASSES``), checked line by line against the class
folder of each path. Classes without images in a split are allowed (``t-shirt`` has none in
``painting_train.txt``) and reported by ``w2sclip data check``. No image is read while loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from w2sclip.data.domainnet_classes import DOMAINNET_CLASSES
from w2sclip.data.folder import folder_split_samples
from w2sclip.data.manifest import ImageDataset
from w2sclip.data.prompts import style_templates
from w2sclip.data.spec import DatasetSpec, make_dataset
from w2sclip.data.split_files import (
    SPLIT_DIRS,
    find_split_file,
    missing_files,
    read_split_file,
)

BASE_URL = "http://csr.bu.edu/ftp/visda/2019/multi-source/"

STYLES = {"clipart": "a clipart image of a {}.", "infograph": "an infographic of a {}.",
          "painting": "a painting of a {}.", "quickdraw": "a quick drawing of a {}.",
          "real": "a photo of a {}.", "sketch": "a sketch of a {}."}
"""Domain-aware prompt: each domain's templates are "a photo of a {}." plus this one."""


class DomainNet(DatasetSpec):
    """DomainNet with its official split files and class order."""

    name = "domainnet"
    description = "DomainNet: 345 classes x 6 domains, official train/test split files"
    source = "http://ai.bu.edu/M3SDA/"
    citation = ("Peng, Bai, Xia, Huang, Saenko, Wang. Moment Matching for Multi-Source Domain "
                "Adaptation. ICCV 2019")
    domains = tuple(STYLES)
    classnames = DOMAINNET_CLASSES
    options: ClassVar[dict] = {"verify_files": False}
    downloadable = True

    def split_file(self, root: Path, domain: str, split: str) -> Path | None:
        """The official ``<domain>_<split>.txt`` under ``root`` (see ``SPLIT_DIRS``), or None."""
        return find_split_file(root, f"{domain}_{split}.txt")

    def load_domain(self, root: Path, domain: str, split: str, opts: dict,
                    errors: list | None) -> ImageDataset:
        templates = style_templates(STYLES[domain])
        index = {c: i for i, c in enumerate(self.classnames)}
        if opts["splits"] == "seeded":  # the seeded split of the image folders
            samples = folder_split_samples(root / domain, root, index.get, split, opts)
            return make_dataset(self.name, self.classnames, templates, samples, domain, split, root)
        path = self.split_file(root, domain, split)
        if path is None:
            where = ", ".join(str(root / d / f"{domain}_{split}.txt") if d else
                              str(root / f"{domain}_{split}.txt") for d in SPLIT_DIRS)
            raise FileNotFoundError(
                f"DomainNet split file {domain}_{split}.txt not found (looked at {where}); get it "
                f"with `w2sclip data download domainnet --root {root} --domains {domain}` or from "
                f"{BASE_URL}domainnet/txt/{domain}_{split}.txt, or pass splits='seeded' for a "
                f"seeded split of the image folders (not the paper's protocol)")
        samples = read_split_file(path, root, domain, index, errors=errors)
        if opts["verify_files"]:
            missing = missing_files(samples)
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) listed in {path} are missing, e.g. {missing[0]}; is "
                    f"{root / domain} fully unpacked? `w2sclip data check domainnet --root {root}` "
                    f"lists them")
        return make_dataset(self.name, self.classnames, templates, samples, domain, split, root)
