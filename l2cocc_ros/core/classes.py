"""The one class table of the project: ids, names, RGB colours, learning maps, class frequencies.

SemanticKITTI's table is read from the official ``semantic-kitti.yaml`` (shipped next to this file), whose
``color_map`` is **BGR**; it is turned into RGB here, once. KITTI-360 (SSCBench, 19 classes) reuses the
SemanticKITTI colour of the class with the same name. Frequencies are the voxel counts used by L2COcc for
the 1/ln(f) cross-entropy weights (docs/model.md §1.2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import yaml

__all__ = ["ClassTable", "CLASS_WEIGHT_RULES", "semantic_kitti", "kitti360", "class_table", "EMPTY", "IGNORE"]

EMPTY = 0
IGNORE = 255

_SK_FREQUENCIES = (
    5.41773033e9, 1.57835390e7, 1.25136e5, 1.18809e5, 6.46799e5, 8.21951e5, 2.62978e5, 2.83696e5,
    2.0475e5, 6.16887030e7, 4.502961e6, 4.488365e7, 2.269923e6, 5.68402180e7, 1.57196520e7,
    1.58442623e8, 2.061623e6, 3.69705220e7, 1.151988e6, 3.34146e5,
)
_K360_NAMES = (
    "empty", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "road", "parking",
    "sidewalk", "other-ground", "building", "fence", "vegetation", "terrain", "pole", "traffic-sign",
    "other-structure", "other-object",
)
_K360_FREQUENCIES = (
    2264087502, 20098728, 104972, 96297, 1149426, 4051087, 125103, 105540713, 16292249, 45297267,
    14454132, 110397082, 6766219, 295883213, 50037503, 1561069, 406330, 30516166, 1950115,
)


#: the CE class-weight rules of :meth:`ClassTable.class_weights`
CLASS_WEIGHT_RULES = ("paper", "enet")


@dataclass(frozen=True)
class ClassTable:
    """Training class ids 0..C-1 (0 = empty) with names, colours and the raw-label maps.

    Attributes:
        name: dataset name ("semantic_kitti" or "kitti360").
        names: class names, index = training id.
        colors_rgb: (C, 3) uint8 RGB colours.
        frequencies: (C,) voxel counts used for the CE class weights.
        learning_map: (R,) uint8 look-up table raw id -> training id (255 = ignored); None if the dataset's
            labels are stored as training ids already (KITTI-360 SSCBench).
        learning_map_inv: (C,) uint16 training id -> raw id, for the official prediction files.
    """

    name: str
    names: Tuple[str, ...]
    colors_rgb: np.ndarray
    frequencies: np.ndarray
    learning_map: np.ndarray | None = None
    learning_map_inv: np.ndarray | None = None
    raw_names: Dict[int, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def class_weights(self, rule: str = "paper") -> np.ndarray:
        """CE class weights from the class frequencies, as float32.

        Args:
            rule: "paper": ``1 / ln(count + 0.001)`` of the raw voxel counts, as the original (nearly flat:
                empty 0.045, the others 0.053-0.086); "enet": ``1 / ln(1.02 + share)`` of the class shares
                (ENet, Paszke et al. 2016: empty 1.5, the others 22-50).

        Raises:
            ValueError: unknown rule.
        """
        counts = self.frequencies.astype(np.float64)
        if rule == "paper":
            return (1.0 / np.log(counts + 0.001)).astype(np.float32)
        if rule == "enet":
            return (1.0 / np.log(1.02 + counts / counts.sum())).astype(np.float32)
        raise ValueError(f"unknown class-weight rule {rule!r}; valid: {', '.join(CLASS_WEIGHT_RULES)}")

    def to_training_ids(self, raw: np.ndarray) -> np.ndarray:
        """Map raw label ids (uint16/uint32, upper 16 bits = instance, ignored) to training ids (uint8).

        Raw ids that the learning map sends to 0, other than raw 0 itself (outlier, other-structure,
        other-object), become 255 (ignored), as in the SSC label preprocessing (docs/model.md §7.1).

        Raises:
            ValueError: if a raw id is not in the table (the message names it).
        """
        if self.learning_map is None:
            raise ValueError(f"class table {self.name!r} has no raw-label learning map")
        sem = np.asarray(raw).astype(np.uint32) & 0xFFFF
        if sem.size and int(sem.max()) >= len(self.learning_map):
            bad = int(sem.max())
            raise ValueError(f"raw label id {bad} is not in the {self.name} learning map (max {len(self.learning_map) - 1})")
        out = self.learning_map[sem]
        unknown = (out == 254)
        if unknown.any():
            bad = int(sem[unknown].flat[0])
            raise ValueError(f"raw label id {bad} is not in the {self.name} learning map")
        return out

    def to_raw_ids(self, train_ids: np.ndarray) -> np.ndarray:
        """Map training ids to raw ids (uint16) through the inverse learning map; 255 -> 0."""
        if self.learning_map_inv is None:
            raise ValueError(f"class table {self.name!r} has no inverse learning map")
        ids = np.asarray(train_ids)
        lut = np.zeros(256, dtype=np.uint16)
        lut[: self.num_classes] = self.learning_map_inv
        return lut[ids.astype(np.uint8)]


def _load_semantic_kitti() -> ClassTable:
    with open(Path(__file__).with_name("semantic-kitti.yaml"), "r", encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    inv = cfg["learning_map_inv"]
    n = len(inv)
    names = tuple(cfg["labels"][inv[i]] if i else "empty" for i in range(n))
    colors = np.array([cfg["color_map"][inv[i]][::-1] for i in range(n)], dtype=np.uint8)  # BGR -> RGB
    size = max(cfg["learning_map"]) + 1
    lut = np.full(size, 254, dtype=np.uint8)  # 254 marks ids that are not in the table
    for raw, train in cfg["learning_map"].items():
        lut[raw] = IGNORE if (train == 0 and raw != 0) else train
    return ClassTable(
        name="semantic_kitti",
        names=names,
        colors_rgb=colors,
        frequencies=np.array(_SK_FREQUENCIES, dtype=np.float64),
        learning_map=lut,
        learning_map_inv=np.array([inv[i] for i in range(n)], dtype=np.uint16),
        raw_names={int(k): v for k, v in cfg["labels"].items()},
    )


def _load_kitti360(sk: ClassTable) -> ClassTable:
    by_name = dict(zip(sk.names, sk.colors_rgb))
    extra = {"other-structure": (255, 150, 0), "other-object": (50, 255, 255)}  # SK raw 52 / 99, RGB
    colors = np.array([by_name.get(n, extra.get(n)) for n in _K360_NAMES], dtype=np.uint8)
    return ClassTable(
        name="kitti360",
        names=_K360_NAMES,
        colors_rgb=colors,
        frequencies=np.array(_K360_FREQUENCIES, dtype=np.float64),
    )


_SK = _load_semantic_kitti()
_K360 = _load_kitti360(_SK)


def semantic_kitti() -> ClassTable:
    """The SemanticKITTI table (20 classes)."""
    return _SK


def kitti360() -> ClassTable:
    """The SSCBench-KITTI-360 table (19 classes)."""
    return _K360


def class_table(dataset: str) -> ClassTable:
    """Look a table up by dataset name ("semantic_kitti" / "kitti360").

    Raises:
        ValueError: unknown dataset name.
    """
    tables = {"semantic_kitti": _SK, "semantickitti": _SK, "kitti360": _K360}
    try:
        return tables[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of 'semantic_kitti', 'kitti360'") from None
