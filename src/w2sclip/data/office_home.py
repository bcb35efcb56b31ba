"""Office-Home (Venkateswara et al., CVPR 2017): 65 classes of office and home objects, 4 domains.

Layout (as unpacked from ``OfficeHomeDataset_10072016.zip``; the top folder may be omitted)::

    ROOT/[OfficeHomeDataset_10072016/]{Art,Clipart,Product,Real World}/<Class>/<image>.jpg

``Real_World`` is accepted for ``Real World`` and class folders match case-insensitively
(``alarm_clock`` = ``Alarm_Clock``). There is no official split: train/test is the seeded
stratified 50/50 split of each domain (``splits.hashed_train_test``), unless the domain has
``train/`` and ``val/`` or ``test/`` folders (the Office-Home-DG copy), which are then used.
Labels follow Python's sorted order of the original folder names (as torchvision's
``ImageFolder`` and DomainBed give them).
"""

from __future__ import annotations

from typing import ClassVar

from w2sclip.data.folder import FixedClassFolders

OFFICE_HOME_CLASSES: tuple[str, ...] = (
    "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator",
    "Calendar", "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp",
    "Drill", "Eraser", "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork",
    "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop", "Marker",
    "Monitor", "Mop", "Mouse", "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil",
    "Postit_Notes", "Printer", "Push_Pin", "Radio", "Refrigerator", "Ruler", "Scissors",
    "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda", "Speaker", "Spoon", "TV", "Table",
    "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam",
)


class OfficeHome(FixedClassFolders):
    """Office-Home in its usual folder layout."""

    name = "office_home"
    description = "Office-Home: 65 classes x 4 domains (art, clipart, product, real_world), seeded split"
    source = "https://www.hemanthdv.org/officeHomeDataset.html"
    citation = ("Venkateswara, Eusebio, Chakraborty, Panchanathan. Deep Hashing Network for "
                "Unsupervised Domain Adaptation. CVPR 2017")
    domains = ("art", "clipart", "product", "real_world")
    classnames = OFFICE_HOME_CLASSES
    domain_folders: ClassVar[dict] = {"art": ("Art", "art"), "clipart": ("Clipart", "clipart"),
                      "product": ("Product", "product"),
                      "real_world": ("Real World", "Real_World", "RealWorld", "real_world")}
    wrappers = ("", "OfficeHomeDataset_10072016", "office_home", "OfficeHome", "office_home_dg")
    styles: ClassVar[dict] = {"art": "an artwork of a {}.", "clipart": "a clipart image of a {}.",
              "product": "a product photo of a {}.", "real_world": "a photo of a {}."}
    manual_download = (
        "Office-Home has no stable direct download URL: fill in the form at "
        "https://www.hemanthdv.org/officeHomeDataset.html, download OfficeHomeDataset_10072016.zip "
        "and unzip it into ROOT (giving ROOT/OfficeHomeDataset_10072016/Art/Alarm_Clock/...).")
