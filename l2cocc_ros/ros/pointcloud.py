"""sensor_msgs PointCloud2 <-> numpy structured arrays (what sensor_msgs_py does, where it is missing).

The dtype is built from ``fields`` and ``point_step`` (padding kept as gaps), laid over the message bytes
with ``np.frombuffer`` (``row_step`` honoured for organised clouds, byte order from ``is_bigendian``);
writing goes through one ``tobytes``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

__all__ = ["dtype_from_fields", "read_points", "read_xyzi", "create_cloud", "create_cloud_xyzi", "XYZI_FIELDS"]

# PointField datatype -> numpy type
_POINTFIELD_DTYPES = {
    PointField.INT8: np.int8,
    PointField.UINT8: np.uint8,
    PointField.INT16: np.int16,
    PointField.UINT16: np.uint16,
    PointField.INT32: np.int32,
    PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32,
    PointField.FLOAT64: np.float64,
}


def _field(name: str, offset: int, datatype: int, count: int = 1) -> PointField:
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


XYZI_FIELDS = [
    _field("x", 0, PointField.FLOAT32),
    _field("y", 4, PointField.FLOAT32),
    _field("z", 8, PointField.FLOAT32),
    _field("intensity", 12, PointField.FLOAT32),
]


def dtype_from_fields(fields: Sequence[PointField], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype of one point.

    Args:
        fields: the PointField list (name, offset, datatype, count).
        point_step: bytes per point; must cover every field.
        is_bigendian: byte order of the data.

    Raises:
        ValueError: unknown datatype, duplicate name, a field beyond ``point_step``, or two fields over the same
            bytes (e.g. FLOAT64 fields declared 4 bytes apart over float32 data).
    """
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in _POINTFIELD_DTYPES:
            raise ValueError(f"PointField {f.name!r} has unknown datatype {f.datatype}")
        if f.name in names:
            raise ValueError(f"PointField name {f.name!r} appears twice")
        base = np.dtype(_POINTFIELD_DTYPES[f.datatype]).newbyteorder(order)
        count = max(int(f.count), 1)
        fmt = base if count == 1 else np.dtype((base, (count,)))
        if f.offset + fmt.itemsize > point_step:
            raise ValueError(f"PointField {f.name!r} (offset {f.offset}) ends beyond point_step {point_step}")
        names.append(f.name)
        formats.append(fmt)
        offsets.append(int(f.offset))
    spans = sorted(zip(offsets, (f.itemsize for f in formats), names))
    for (o1, n1, a), (o2, _, b) in zip(spans, spans[1:]):
        if o2 < o1 + n1:
            raise ValueError(f"PointField {b!r} (offset {o2}) overlaps {a!r} (offset {o1}, {n1} bytes): the fields "
                             "do not describe the data (a wrong datatype?)")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def read_points(msg: PointCloud2) -> np.ndarray:
    """All points of a cloud as a flat structured array (height * width,), fields named as in the message.

    Raises:
        ValueError: inconsistent ``point_step`` / ``row_step`` / ``data`` length, or bad fields.
    """
    h, w, step = int(msg.height), int(msg.width), int(msg.point_step)
    if step <= 0:
        raise ValueError(f"PointCloud2.point_step is {step}")
    dtype = dtype_from_fields(msg.fields, step, bool(msg.is_bigendian))
    n = h * w
    if n == 0:
        return np.zeros(0, dtype=dtype)
    row_step = int(msg.row_step) if msg.row_step else w * step
    if row_step < w * step:
        raise ValueError(f"PointCloud2.row_step {row_step} < width * point_step ({w * step})")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    need = row_step * (h - 1) + w * step
    if buf.size < need:
        raise ValueError(f"PointCloud2.data has {buf.size} bytes, expected at least {need}")
    if row_step == w * step:
        return np.frombuffer(msg.data, dtype=dtype, count=n)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, w * step), strides=(row_step, 1))
    return np.frombuffer(np.ascontiguousarray(rows).tobytes(), dtype=dtype, count=n)


def read_xyzi(msg: PointCloud2, *, default_intensity: float = 0.0) -> Tuple[np.ndarray, int]:
    """x, y, z, intensity of the finite points as (N, 4) float32 (native order).

    A cloud without an ``intensity`` field gets ``default_intensity``. Points with a NaN or inf coordinate
    are dropped.

    Returns:
        (points (N, 4) float32, number of non-finite points dropped).

    Raises:
        ValueError: when x, y or z is missing (plus the errors of :func:`read_points`).
    """
    pts = read_points(msg)
    names = pts.dtype.names or ()
    missing = [c for c in ("x", "y", "z") if c not in names]
    if missing:
        raise ValueError(f"PointCloud2 lacks field(s) {missing}; has {list(names)}")
    out = np.empty((pts.shape[0], 4), dtype=np.float32)
    for i, c in enumerate(("x", "y", "z")):
        out[:, i] = pts[c]
    out[:, 3] = pts["intensity"] if "intensity" in names else default_intensity
    finite = np.all(np.isfinite(out), axis=1)
    dropped = int(finite.size - np.count_nonzero(finite))
    return (out if dropped == 0 else out[finite]), dropped


def create_cloud(header, fields: Sequence[PointField], points: np.ndarray) -> PointCloud2:
    """An unorganised (height 1) cloud from a structured array whose layout matches ``fields``.

    Raises:
        ValueError: when the array's itemsize differs from the fields' point step.
    """
    pts = np.ascontiguousarray(points)
    step = pts.dtype.itemsize
    dtype = dtype_from_fields(fields, step)
    if pts.dtype.names is not None and pts.dtype != dtype:
        pts = pts.astype(dtype)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, int(pts.shape[0])
    msg.fields = list(fields)
    msg.is_bigendian = False
    msg.point_step = step
    msg.row_step = step * msg.width
    msg.is_dense = True
    msg.data = pts.tobytes()
    return msg


def create_cloud_xyzi(header, xyzi: np.ndarray) -> PointCloud2:
    """A float32 x, y, z, intensity cloud (point_step 16) from an (N, 4) array.

    Raises:
        ValueError: when ``xyzi`` is not (N, 4).
    """
    arr = np.asarray(xyzi)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"xyzi must be (N, 4), got {arr.shape}")
    dtype = dtype_from_fields(XYZI_FIELDS, 16)
    pts = np.ascontiguousarray(arr, dtype="<f4").view(dtype).reshape(-1)
    return create_cloud(header, XYZI_FIELDS, pts)
