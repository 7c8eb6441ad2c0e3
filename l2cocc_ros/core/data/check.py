"""Dataset validation before training: every file a sample reads, checked without training on it.

:func:`check_file` looks at one file's structure by its role in a frame (``paths()`` keys of the datasets):
a velodyne scan is a whole number of (x, y, z, i) float32 records, raw voxel labels / invalid masks have the
size of the grid, a preprocessed ``.npy`` has a valid header, the expected shape and all its bytes, a PNG
ends with its IEND chunk (``full`` decodes it). :func:`check_dataset` runs it over every frame, so a bad file
at frame 9,000 stops ``l2cocc train`` before its first step (``l2cocc check-data`` lists them all).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from l2cocc_ros.core.data.kitti_io import VOXEL_DIMS

__all__ = ["check_file", "check_dataset", "dataset_files"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _check_png(path: Path, size: int, full: bool) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(size - 12, 0))
        tail = f.read(12)
    if head != _PNG_MAGIC:
        return "not a PNG file (bad signature)"
    if tail != _PNG_END:
        return f"truncated PNG ({size:,} bytes, no IEND chunk at the end)"
    if full:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, ValueError, SyntaxError) as exc:
            return f"PNG does not decode: {exc}"
    return None


def _check_npy(path: Path, size: int, shape: Optional[Tuple[int, ...]]) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        return f"not a valid .npy file: {exc}"
    got_shape, _, dtype = header
    if shape is not None and tuple(got_shape) != tuple(shape):
        return f".npy of shape {tuple(got_shape)}, expected {tuple(shape)}"
    expected = offset + int(np.prod(got_shape)) * dtype.itemsize
    if size != expected:
        return f"{'truncated' if size < expected else 'wrong size'} .npy: {size:,} bytes, expected {expected:,}"
    return None


def _exact(expected: int) -> Callable[[int], Optional[str]]:
    def check(size: int) -> Optional[str]:
        if size != expected:
            return f"{'truncated' if size < expected else 'wrong size'}: {size:,} bytes, expected {expected:,}"
        return None
    return check


def check_file(path: Path, role: str, *, full: bool = False, dims: Sequence[int] = VOXEL_DIMS) -> Optional[str]:
    """What is wrong with one dataset file, or None.

    Args:
        path: the file.
        role: its key in a dataset's ``paths()``: left, right, velodyne, voxel_label, invalid, stereo,
            label_1_1, label_1_2 (anything else: only existence is checked).
        full: also decode images (slow; the default checks their structure).
        dims: the label grid.
    """
    path = Path(path)
    if not path.is_file():
        return "missing" if not path.exists() else "not a file"
    size = path.stat().st_size
    n = int(np.prod(dims))
    if role in ("left", "right"):
        return _check_png(path, size, full)
    if role == "velodyne":
        if size == 0 or size % 16:
            return f"truncated velodyne scan: {size:,} bytes is not a positive multiple of 16 (x, y, z, i float32)"
        return None
    if role == "voxel_label":
        return _exact(n * 2)(size)
    if role == "invalid":
        return _exact(n // 8)(size)
    if role == "label_1_1":
        return _check_npy(path, size, tuple(dims))
    if role == "label_1_2":
        return _check_npy(path, size, tuple(d // 2 for d in dims))
    if role == "stereo":
        return _check_npy(path, size, None)
    return None


def dataset_files(dataset) -> List[Tuple[Path, str]]:
    """(path, role) of every file the samples of ``dataset`` (an ``SSCDatasetBase``) read."""
    out: List[Tuple[Path, str]] = []
    for seq, fid in dataset.frames:
        paths = dataset.paths(seq, fid)
        roles: Dict[Path, str] = {p: k for k, p in paths.items()}
        out += [(f, roles.get(f, "")) for f in dataset.required_files(seq, fid)]
    return out


def check_dataset(dataset, *, full: bool = False, progress: bool = False) -> List[str]:
    """``"PATH: what is wrong"`` for every bad file of ``dataset`` (empty when all are fine)."""
    files = dataset_files(dataset)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="check-data", unit="file")
    problems = []
    for path, role in files:
        reason = check_file(path, role, full=full)
        if reason:
            problems.append(f"{path}: {reason}")
    return problems
