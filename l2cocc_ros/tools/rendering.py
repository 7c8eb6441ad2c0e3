"""PNG pictures of a semantic voxel grid (bird's-eye view + 3D view), optionally next to the ground truth: the
library behind ``l2cocc render`` (``tools/render.py``) and the demo's pictures.

Use::

    image = render_grid(labels, semantic_kitti(), title=grid_title("velodyne", (sec, nsec), "l2cocc-d"), gt=gt)
    image.save("grid.png")

Conventions: labels are (X, Y, Z) class ids of the grid (x forward, y left, z up in the LiDAR frame),
0 = empty, 255 = unknown. The bird's-eye view shows the top-most non-empty class of every column with x
pointing up and y to the left (as seen from above); columns that are only unknown are light grey. The 3D
view draws the visible faces of the occupied voxels (unknown voxels are not drawn) with a painter's
algorithm from a camera behind and above the grid's near edge, tops brighter than sides.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from l2cocc_ros.core.classes import IGNORE
from l2cocc_ros.core.data.kitti_io import read_label_npy, read_voxel_bits, read_voxel_labels

__all__ = ["render_grid", "bev_image", "perspective_image", "grid_title", "load_labels"]

BACKGROUND = (255, 255, 255)
UNKNOWN_RGB = (205, 205, 205)
TEXT_RGB = (20, 20, 20)
# brightness of a face by its normal: +z (top) full colour, x faces and y faces darker
_FACE_SHADE = {(2, 1): 1.0, (2, -1): 0.45, (0, -1): 0.78, (0, 1): 0.78, (1, -1): 0.62, (1, 1): 0.62}


def _check(labels: np.ndarray, colors: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"{what}: expected a (X, Y, Z) volume, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 class ids, got {labels.dtype}")
    bad = (labels >= len(colors)) & (labels != IGNORE)
    if bad.any():
        raise ValueError(f"{what}: value {int(labels[bad].flat[0])} is neither a class id (< {len(colors)}) nor {IGNORE}")
    return labels


def bev_image(labels: np.ndarray, colors: np.ndarray, scale: int = 1) -> np.ndarray:
    """Bird's-eye view: the colour of the top-most non-empty voxel of every column.

    Args:
        labels: (X, Y, Z) uint8 class ids (0 empty, 255 unknown).
        colors: (C, 3) uint8 RGB per class id.
        scale: pixels per voxel.

    Returns:
        (X * scale, Y * scale, 3) uint8 image; row 0 is the far end (largest x), column 0 the largest y.
    """
    colors = np.asarray(colors, dtype=np.uint8)
    labels = _check(labels, colors, "labels")
    solid = (labels != 0) & (labels != IGNORE)
    top = labels.shape[2] - 1 - np.argmax(solid[:, :, ::-1], axis=2)  # (X, Y) index of the highest solid voxel
    top_class = np.take_along_axis(labels, top[:, :, None], axis=2)[:, :, 0]
    out = np.empty(labels.shape[:2] + (3,), np.uint8)
    out[:] = BACKGROUND
    out[(labels == IGNORE).any(axis=2)] = UNKNOWN_RGB
    has = solid.any(axis=2)
    out[has] = colors[top_class[has]]
    out = out[::-1, ::-1]  # x up, y left
    return np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)


def _camera(dims: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Eye position and 3x3 world->camera rotation (rows: right, down, forward) in voxel units."""
    nx, ny, nz = (float(n) for n in dims)
    eye = np.array([-0.3 * nx, 0.35 * ny, nz + 0.55 * nx])
    target = np.array([0.5 * nx, 0.5 * ny, 0.0])
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return eye, np.stack([right, down, fwd])


def _faces(solid: np.ndarray, eye: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible faces: (F, 4, 3) corners, (F,) voxel flat index, (F,) shade; only faces towards the eye
    whose neighbour is not solid."""
    corners, voxels, shades = [], [], []
    idx = np.argwhere(solid)  # (N, 3)
    flat = np.ravel_multi_index(idx.T, solid.shape)
    padded = np.pad(solid, 1)
    for (axis, sign), shade in _FACE_SHADE.items():
        nb = idx + 1  # padded coordinates
        nb[:, axis] += sign
        keep = ~padded[nb[:, 0], nb[:, 1], nb[:, 2]]
        centre = idx[keep] + 0.5
        centre[:, axis] += 0.5 * sign
        towards = (eye[axis] - centre[:, axis]) * sign > 0
        centre = centre[towards]
        u, v = [a for a in range(3) if a != axis]
        quad = np.zeros((4, 3))
        quad[:, u] = [-0.5, 0.5, 0.5, -0.5]
        quad[:, v] = [-0.5, -0.5, 0.5, 0.5]
        corners.append(centre[:, None, :] + quad[None])
        voxels.append(flat[keep][towards])
        shades.append(np.full(len(centre), shade))
    return np.concatenate(corners), np.concatenate(voxels), np.concatenate(shades)


def perspective_image(labels: np.ndarray, colors: np.ndarray, size: Tuple[int, int] = (640, 512)) -> np.ndarray:
    """3D view of the occupied voxels (painter's algorithm over the visible faces).

    Args:
        labels: (X, Y, Z) uint8 class ids (0 empty, 255 unknown; neither is drawn).
        colors: (C, 3) uint8 RGB per class id.
        size: (width, height) of the picture in pixels.

    Returns:
        (height, width, 3) uint8 image; the grid's near edge (x = 0) is at the bottom.
    """
    colors = np.asarray(colors, dtype=np.uint8)
    labels = _check(labels, colors, "labels")
    width, height = size
    eye, rot = _camera(labels.shape)
    # fit the projection of the whole grid box into the picture
    box = np.array(np.meshgrid(*[[0.0, n] for n in labels.shape], indexing="ij")).reshape(3, -1).T
    cam = (box - eye) @ rot.T
    uv = cam[:, :2] / cam[:, 2:3]
    lo, hi = uv.min(0), uv.max(0)
    margin = 8
    scale = min((width - 2 * margin) / (hi[0] - lo[0]), (height - 2 * margin) / (hi[1] - lo[1]))
    offset = np.array([width, height]) / 2 - scale * (lo + hi) / 2

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    solid = (labels != 0) & (labels != IGNORE)
    if solid.any():
        corners, voxels, shades = _faces(solid, eye)
        cam = (corners - eye) @ rot.T  # (F, 4, 3)
        pix = cam[..., :2] / cam[..., 2:3] * scale + offset
        depth = np.linalg.norm(corners.mean(axis=1) - eye, axis=1)
        order = np.argsort(-depth, kind="stable")  # far faces first
        base = colors[labels.reshape(-1)[voxels]].astype(np.float32)
        fill = np.clip(base * shades[:, None], 0, 255).astype(np.uint8)
        edge = (fill.astype(np.float32) * 0.7).astype(np.uint8)
        pix_l = np.rint(pix[order]).astype(np.int32).tolist()
        fill_l, edge_l = fill[order].tolist(), edge[order].tolist()
        for quad, f, e in zip(pix_l, fill_l, edge_l):
            draw.polygon([tuple(p) for p in quad], fill=tuple(f), outline=tuple(e))
    return np.asarray(image)


def grid_title(frame_id: str, stamp: Tuple[int, int], model: Optional[str] = None) -> str:
    """Title line for a grid: frame, stamp (sec.nanosec) and optionally the model that produced it."""
    text = f"frame '{frame_id}'  stamp {int(stamp[0])}.{int(stamp[1]):09d} s"
    return f"{text}  {model}" if model else text


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def render_grid(labels: np.ndarray, table, *, title: Optional[str] = None, gt: Optional[np.ndarray] = None,
                panel_height: int = 512) -> Image.Image:
    """Picture of a grid: bird's-eye view and 3D view, a legend of the classes present and a title; with
    ``gt``, a second row shows the ground truth the same way.

    Args:
        labels: (X, Y, Z) uint8 class ids (0 empty, 255 unknown).
        table: the class table (``core.classes.ClassTable``, or anything with ``names`` and ``colors_rgb``).
        title: first line of the picture (e.g. ``grid_title(...)`` or a file name).
        gt: optional (X, Y, Z) uint8 ground truth with the same shape.
        panel_height: height of each view in pixels.

    Returns:
        RGB image. ``image.info["panels"]`` maps "grid/bev", "grid/3d" (with ``gt``: "prediction/bev",
        "prediction/3d", "ground truth/bev", "ground truth/3d") and "legend" to (left, top, right, bottom)
        pixel boxes.

    Raises:
        ValueError: bad shape or dtype, a label not in the table, or ``gt`` of another shape.
    """
    colors = np.asarray(table.colors_rgb, dtype=np.uint8)
    names = list(table.names)
    rows = [("prediction" if gt is not None else "grid", _check(labels, colors, "labels"))]
    if gt is not None:
        gt = _check(gt, colors, "gt")
        if gt.shape != rows[0][1].shape:
            raise ValueError(f"gt: shape {gt.shape} does not match labels {rows[0][1].shape}")
        rows.append(("ground truth", gt))
    dims = rows[0][1].shape
    bev_scale = max(1, panel_height // max(dims[0], dims[1]))
    bev_w, bev_h = dims[1] * bev_scale, dims[0] * bev_scale
    p3d = (int(panel_height * 1.25), panel_height)
    font, small = _font(16), _font(13)
    pad, title_h, caption_h = 10, 28, 20
    present = sorted(set(np.unique(np.concatenate([r[1].reshape(-1) for r in rows])).tolist()) - {0})
    entries = [(names[c], tuple(colors[c].tolist())) for c in present if c != IGNORE]
    if IGNORE in present:
        entries.append(("unknown (255)", UNKNOWN_RGB))
    legend_w = 190
    row_h = caption_h + max(bev_h, p3d[1]) + pad
    width = pad + bev_w + pad + p3d[0] + pad + legend_w
    height = max(title_h + len(rows) * row_h, title_h + 22 * len(entries) + 2 * pad)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((pad, 6), title or "", fill=TEXT_RGB, font=font)
    panels: Dict[str, Tuple[int, int, int, int]] = {}
    for r, (name, vol) in enumerate(rows):
        top = title_h + r * row_h
        caption = f"{name}: bird's-eye view (x up, y left)"
        if draw.textlength(caption, font=small) > bev_w:
            caption = f"{name}: top view"
        draw.text((pad, top), caption, fill=TEXT_RGB, font=small)
        draw.text((2 * pad + bev_w, top), f"{name}: 3D view", fill=TEXT_RGB, font=small)
        box_bev = (pad, top + caption_h, pad + bev_w, top + caption_h + bev_h)
        box_3d = (2 * pad + bev_w, top + caption_h, 2 * pad + bev_w + p3d[0], top + caption_h + p3d[1])
        image.paste(Image.fromarray(bev_image(vol, colors, bev_scale)), box_bev[:2])
        image.paste(Image.fromarray(perspective_image(vol, colors, p3d)), box_3d[:2])
        draw.rectangle((box_bev[0] - 1, box_bev[1] - 1, box_bev[2], box_bev[3]), outline=(120, 120, 120))
        panels[f"{name}/bev"], panels[f"{name}/3d"] = box_bev, box_3d
    left = width - legend_w
    for i, (label, rgb) in enumerate(entries):
        y = title_h + pad + 22 * i
        draw.rectangle((left, y, left + 15, y + 15), fill=rgb, outline=(60, 60, 60))
        draw.text((left + 22, y), label, fill=TEXT_RGB, font=small)
    panels["legend"] = (left, title_h, width, height)
    image.info["panels"] = panels
    return image


def load_labels(path: Path, table, invalid: Optional[Path] = None) -> np.ndarray:
    """Read a volume as training ids: a voxel ``.label`` (uint16 raw ids, mapped through the table's learning
    map) or a ``.npy`` of training ids; ``invalid`` (bit-packed ``.invalid``) marks voxels as unknown (255).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unknown suffix, a non-3D ``.npy``, values outside 0..255, or a raw id not in the table.
    """
    path = Path(path)
    if path.suffix == ".label":
        labels = table.to_training_ids(read_voxel_labels(path))
    elif path.suffix == ".npy":
        arr = read_label_npy(path)
        if arr.ndim != 3 or arr.dtype.kind not in "iu":
            raise ValueError(f"{path}: expected a 3D integer volume of training ids, got {arr.dtype} {arr.shape}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(f"{path}: training ids must lie in 0..255")
        labels = arr.astype(np.uint8)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected .label or .npy")
    if invalid is not None:
        labels = labels.copy()
        labels[read_voxel_bits(invalid, labels.shape)] = IGNORE
    return labels
