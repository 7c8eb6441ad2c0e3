"""Readers and writers of the SemanticKITTI file formats (docs/model.md §7.1).

Every reader checks that the file exists and has the size its format implies, and raises an error that
names the file: ``FileNotFoundError`` when it is missing, ``ValueError`` when it is truncated, has the
wrong size or cannot be parsed. Every writer writes to a temporary file next to the target and renames
it, so an interrupted write never leaves a partial file under the final name.

Formats:
    * ``voxels/*.bin``, ``*.invalid``, ``*.occluded``: bit-packed booleans, one bit per voxel, MSB first
      within each byte (``numpy.packbits`` order), voxels row-major over (x, y, z), z fastest.
    * ``voxels/*.label``: uint16 per voxel (raw SemanticKITTI ids).
    * ``labels/*.label`` (per point): uint32 per point, lower 16 bits = semantic id, upper 16 = instance.
    * ``velodyne/*.bin``: float32 x, y, z, reflectance per point.
    * ``calib.txt``: ``KEY: 12 floats`` (3x4 row-major) per line, returned padded to 4x4; parsing stops at
      the first empty line.
    * ``poses.txt``: 12 floats per line (3x4 row-major camera pose), one line per frame.
    * ``times.txt``: one float (seconds) per line.
    * ``*_1_1.npy`` / ``*_1_2.npy``: preprocessed label volumes (numpy ``.npy``).

All files are little-endian, as written by the KITTI tools.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "VOXEL_DIMS",
    "PathLike",
    "pack_bits",
    "unpack_bits",
    "read_voxel_bits",
    "write_voxel_bits",
    "read_voxel_labels",
    "write_voxel_labels",
    "read_point_labels",
    "write_point_labels",
    "read_velodyne",
    "write_velodyne",
    "read_calib",
    "write_calib",
    "read_poses",
    "write_poses",
    "read_times",
    "write_times",
    "read_label_npy",
    "write_npy",
    "atomic_write_bytes",
]

PathLike = Union[str, os.PathLike]
VOXEL_DIMS: Tuple[int, int, int] = (256, 256, 32)
"""(X, Y, Z) of the SemanticKITTI scene-completion volume."""


# ----------------------------------------------------------------------------------------------- helpers
def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Parent folders are created. Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _read_bytes(path: PathLike, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path.read_bytes()


def _check_size(path: PathLike, what: str, got: int, expected: int) -> None:
    if got != expected:
        kind = "truncated" if got < expected else "wrong size"
        raise ValueError(f"{what} file {path} is {kind}: {got} bytes, expected {expected}")


def _dims(dims: Sequence[int]) -> Tuple[int, int, int]:
    dims = tuple(int(d) for d in dims)
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise ValueError(f"dims must be three positive integers, got {dims}")
    return dims  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- bits
def pack_bits(mask: np.ndarray) -> np.ndarray:
    """Pack a boolean array (flattened row-major) into bytes, MSB first (SemanticKITTI order).

    Raises:
        ValueError: if the number of elements is not a multiple of 8.
    """
    flat = np.asarray(mask).reshape(-1)
    if flat.size % 8:
        raise ValueError(f"cannot bit-pack {flat.size} values: not a multiple of 8")
    return np.packbits(flat.astype(bool), bitorder="big")


def unpack_bits(data: np.ndarray, dims: Optional[Sequence[int]] = None) -> np.ndarray:
    """Unpack MSB-first bytes into a boolean array, reshaped to ``dims`` when given."""
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8).reshape(-1), bitorder="big").astype(bool)
    return bits.reshape(_dims(dims)) if dims is not None else bits


def read_voxel_bits(path: PathLike, dims: Sequence[int] = VOXEL_DIMS) -> np.ndarray:
    """Read a bit-packed voxel file (``.bin``, ``.invalid``, ``.occluded``) as a bool (X, Y, Z) array."""
    dims = _dims(dims)
    raw = _read_bytes(path, "bit-packed voxel")
    _check_size(path, "bit-packed voxel", len(raw), int(np.prod(dims)) // 8)
    return unpack_bits(np.frombuffer(raw, dtype=np.uint8), dims)


def write_voxel_bits(path: PathLike, mask: np.ndarray) -> Path:
    """Write a boolean voxel array as a bit-packed file (MSB first)."""
    return atomic_write_bytes(path, pack_bits(mask).tobytes())


# ----------------------------------------------------------------------------------------------- labels
def read_voxel_labels(path: PathLike, dims: Sequence[int] = VOXEL_DIMS) -> np.ndarray:
    """Read a voxel ``.label`` file (uint16 raw ids) as a (X, Y, Z) uint16 array."""
    dims = _dims(dims)
    raw = _read_bytes(path, "voxel label")
    _check_size(path, "voxel label", len(raw), int(np.prod(dims)) * 2)
    return np.frombuffer(raw, dtype="<u2").astype(np.uint16).reshape(dims)


def write_voxel_labels(path: PathLike, labels: np.ndarray) -> Path:
    """Write raw voxel label ids as uint16 (values must fit in 16 bits)."""
    arr = np.asarray(labels)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFF):
        raise ValueError(f"voxel labels for {path} must be in 0..65535")
    return atomic_write_bytes(path, arr.reshape(-1).astype("<u2").tobytes())


def read_point_labels(path: PathLike, num_points: Optional[int] = None) -> np.ndarray:
    """Read a per-point ``.label`` file (uint32: semantic id | instance << 16) as a (N,) uint32 array.

    Args:
        path: the file.
        num_points: if given, the number of points of the matching scan; a mismatch is an error.
    """
    raw = _read_bytes(path, "point label")
    if len(raw) % 4:
        raise ValueError(f"point label file {path} is truncated: {len(raw)} bytes is not a multiple of 4")
    if num_points is not None:
        _check_size(path, "point label", len(raw), int(num_points) * 4)
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32)


def write_point_labels(path: PathLike, labels: np.ndarray) -> Path:
    """Write per-point labels as uint32."""
    arr = np.asarray(labels)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
        raise ValueError(f"point labels for {path} must fit in uint32")
    return atomic_write_bytes(path, arr.reshape(-1).astype("<u4").tobytes())


# ----------------------------------------------------------------------------------------------- velodyne
def read_velodyne(path: PathLike) -> np.ndarray:
    """Read a velodyne scan as a (N, 4) float32 array (x, y, z, reflectance)."""
    raw = _read_bytes(path, "velodyne")
    if len(raw) % 16:
        raise ValueError(f"velodyne file {path} is truncated: {len(raw)} bytes is not a multiple of 16")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(-1, 4)


def write_velodyne(path: PathLike, points: np.ndarray) -> Path:
    """Write a (N, 4) scan as float32."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise ValueError(f"velodyne points for {path} must be (N, 4), got {pts.shape}")
    return atomic_write_bytes(path, pts.astype("<f4").tobytes())


# ----------------------------------------------------------------------------------------------- text files
def _read_text(path: PathLike, what: str) -> str:
    try:
        return _read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} file {path} is not text: {exc}") from None


def _to_4x4(mat: np.ndarray, name: str) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape == (4, 4):
        return mat.copy()
    if mat.shape == (3, 4):
        return np.vstack([mat, [0.0, 0.0, 0.0, 1.0]])
    if mat.size == 12:
        return np.vstack([mat.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
    raise ValueError(f"{name} must be 3x4 or 4x4, got shape {mat.shape}")


def read_calib(path: PathLike, required: Iterable[str] = ("P2", "Tr")) -> Dict[str, np.ndarray]:
    """Read a KITTI odometry ``calib.txt``.

    Each line is ``KEY: v1 ... v12`` (a 3x4 matrix, row-major); matrices are returned padded to 4x4
    float64 (last row 0, 0, 0, 1). Parsing stops at the first empty line, as the original loader does.

    Args:
        path: the file.
        required: keys that must be present (default P2 and Tr).

    Raises:
        FileNotFoundError: missing file.
        ValueError: a line that is not ``KEY: 12 numbers`` or a missing required key (names file and key).
    """
    text = _read_text(path, "calibration")
    calib: Dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            break
        key, sep, rest = line.partition(":")
        if not sep:
            raise ValueError(f"calibration file {path}, line {lineno}: expected 'KEY: values', got {line!r}")
        try:
            vals = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            raise ValueError(f"calibration file {path}, line {lineno}: non-numeric value in {line!r}") from None
        if vals.size != 12:
            raise ValueError(f"calibration file {path}, line {lineno}: {key.strip()} has {vals.size} values, "
                             "expected 12")
        calib[key.strip()] = _to_4x4(vals, key.strip())
    missing = [k for k in required if k not in calib]
    if missing:
        raise ValueError(f"calibration file {path} lacks {', '.join(missing)}")
    return calib


def write_calib(path: PathLike, calib: Mapping[str, np.ndarray]) -> Path:
    """Write ``KEY: 12 floats`` lines (the top 3x4 of each matrix), in the mapping's order."""
    lines = []
    for key, mat in calib.items():
        top = _to_4x4(mat, key)[:3].reshape(-1)
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in top))
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _read_matrix_rows(path: PathLike, what: str, width: int) -> np.ndarray:
    text = _read_text(path, what)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            vals = [float(v) for v in line.split()]
        except ValueError:
            raise ValueError(f"{what} file {path}, line {lineno}: non-numeric value in {line!r}") from None
        if len(vals) != width:
            raise ValueError(f"{what} file {path}, line {lineno}: {len(vals)} values, expected {width}")
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, width)


def read_poses(path: PathLike) -> np.ndarray:
    """Read ``poses.txt`` as a (N, 4, 4) float64 array (left-camera poses in the first frame)."""
    rows = _read_matrix_rows(path, "poses", 12)
    out = np.tile(np.eye(4), (len(rows), 1, 1))
    out[:, :3, :] = rows.reshape(-1, 3, 4)
    return out


def write_poses(path: PathLike, poses: np.ndarray) -> Path:
    """Write (N, 4, 4) or (N, 3, 4) poses, 12 floats per line."""
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"poses for {path} must be (N, 4, 4) or (N, 3, 4), got {arr.shape}")
    lines = [" ".join(f"{v:.12e}" for v in p[:3].reshape(-1)) for p in arr]
    return atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def read_times(path: PathLike) -> np.ndarray:
    """Read ``times.txt`` as a (N,) float64 array of seconds."""
    return _read_matrix_rows(path, "times", 1).reshape(-1)


def write_times(path: PathLike, times: np.ndarray) -> Path:
    """Write one time stamp (seconds) per line."""
    arr = np.asarray(times, dtype=np.float64).reshape(-1)
    return atomic_write_bytes(path, "".join(f"{t:.6e}\n" for t in arr).encode("utf-8"))


# ----------------------------------------------------------------------------------------------- npy
def read_label_npy(path: PathLike, shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read a preprocessed label volume (``<id>_1_1.npy`` / ``_1_2.npy``) or any ``.npy`` array.

    Args:
        path: the file.
        shape: expected shape; a mismatch is an error naming the file.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a valid ``.npy`` file (e.g. truncated) or wrong shape.
    """
    raw = _read_bytes(path, "npy")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"npy file {path} is corrupt or truncated: {exc}") from None
    if shape is not None and tuple(arr.shape) != tuple(int(s) for s in shape):
        raise ValueError(f"npy file {path} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    return arr


def write_npy(path: PathLike, array: np.ndarray) -> Path:
    """Write an array as ``.npy`` atomically (the name is used as given; no suffix is appended)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())
