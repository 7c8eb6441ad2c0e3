"""Voxel grid geometry: the SemanticKITTI scene-completion volume in the LiDAR frame.

Voxel (i, j, k) covers x in [x0 + i*v, x0 + (i+1)*v) etc.; flattened arrays are row-major over (x, y, z),
z fastest, as SemanticKITTI's voxel files (README, "The grid message").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

__all__ = ["GridSpec", "SEMANTIC_KITTI_GRID"]


@dataclass(frozen=True)
class GridSpec:
    """A dense axis-aligned voxel grid.

    Attributes:
        lower: (x, y, z) of the grid's lower corner [m].
        voxel_size: edge of a voxel [m].
        dims: number of voxels along x, y, z.
    """

    lower: Tuple[float, float, float] = (0.0, -25.6, -2.0)
    voxel_size: float = 0.2
    dims: Tuple[int, int, int] = (256, 256, 32)

    @property
    def upper(self) -> Tuple[float, float, float]:
        """(x, y, z) of the upper corner [m], rounded to 1e-6 m: the configs' literals (51.2, not 51.2000000001)."""
        return tuple(round(lo + n * self.voxel_size, 6) for lo, n in zip(self.lower, self.dims))

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.dims))

    def point_cloud_range(self) -> Tuple[float, ...]:
        """(x_min, y_min, z_min, x_max, y_max, z_max) as in the original configs (``point_cloud_range``): the
        one source of the grid's range (the model blocks, the markers' crop)."""
        return (*self.lower, *self.upper)

    def downsampled(self, factor: int) -> "GridSpec":
        """The same volume with voxels ``factor`` times larger (e.g. the internal 128x128x16 grid)."""
        if any(n % factor for n in self.dims):
            raise ValueError(f"grid dims {self.dims} are not divisible by {factor}")
        return GridSpec(self.lower, self.voxel_size * factor, tuple(n // factor for n in self.dims))

    def voxel_centers(self) -> np.ndarray:
        """(X, Y, Z, 3) float32 centres of all voxels."""
        axes = [lo + (np.arange(n) + 0.5) * self.voxel_size for lo, n in zip(self.lower, self.dims)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)

    def index_of(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Voxel indices (N, 3) int64 of points (N, >=3) and a mask of the points inside the grid."""
        idx = np.floor((points[:, :3] - np.asarray(self.lower)) / self.voxel_size).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(self.dims)), axis=1)
        return idx, inside


SEMANTIC_KITTI_GRID = GridSpec()
