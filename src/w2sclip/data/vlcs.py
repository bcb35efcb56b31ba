"""VLCS (Fang, Xu, Rockmore, ICCV 2013): 5 classes in 4 photo datasets (VOC2007, LabelMe,
Caltech101, SUN09).

Two layouts are read::

    ROOT/[VLCS/]{Caltech101,LabelMe,SUN09,VOC2007}/{bird,car,chair,dog,person}/<image>   (DomainBed)
    ROOT/[VLCS/]{CALTECH,LABELME,SUN,PASCAL}/{train,crossval,test,full}/{0..4}/<image>   (JiGen/Dassl)

Class folders ``0..4`` mean bird, car, chair, dog, person. With ``train/`` and ``test/``
folders those are the official splits (``crossval`` and ``full`` are not used); otherwise
train/test is the seeded stratified 50/50 split (``splits.hashed_train_test``).
"""

from __future__ import annotations

from typing import ClassVar

from w2sclip.data.folder import FixedClassFolders


class VLCS(FixedClassFolders):
    """VLCS in the DomainBed or the JiGen/Dassl folder layout."""

    name = "vlcs"
    description = "VLCS: 5 classes x 4 photo datasets (caltech, labelme, pascal, sun)"
    source = "https://github.com/facebookresearch/DomainBed (download script); Fang et al. 2013"
    citation = ("Fang, Xu, Rockmore. Unbiased Metric Learning: On the Utilization of Multiple "
                "Datasets and Web Images for Softening Bias. ICCV 2013")
    domains = ("caltech", "labelme", "pascal", "sun")
    classnames = ("bird", "car", "chair", "dog", "person")
    numeric_classes = True
    domain_folders: ClassVar[dict] = {"caltech": ("Caltech101", "CALTECH", "caltech"),
                      "labelme": ("LabelMe", "LABELME", "labelme"),
                      "pascal": ("VOC2007", "PASCAL", "pascal"), "sun": ("SUN09", "SUN", "sun")}
    wrappers = ("", "VLCS", "vlcs")
    manual_download = (
        "VLCS has no stable direct download URL (copies live on Google Drive, e.g. the one in "
        "DomainBed's domainbed/scripts/download.py): download VLCS.tar.gz and unpack it into ROOT "
        "(giving ROOT/VLCS/Caltech101/bird/...).")
