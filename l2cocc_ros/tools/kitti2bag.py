"""``l2cocc kitti2bag``: a SemanticKITTI / KITTI odometry sequence -> rosbag2 (mcap or sqlite3).

Writes what a stereo (+ LiDAR) perception node needs to run on a recorded drive, with the de-facto KITTI
topic and frame names (anchors.md §C), all configurable:

* ``/kitti/camera_color_{left,right}/image_raw`` (rgb8, ``image_2`` / ``image_3``) and ``.../camera_info``
  (rectified: d = 0, ROS stereo convention: left ``p = [K | 0]``, right ``p = [K | -fx * B]``);
* ``/kitti/velodyne_points`` (PointCloud2 x, y, z, intensity float32), when ``velodyne/`` exists;
* ``/tf_static`` once (TRANSIENT_LOCAL QoS recorded in the bag metadata): ``base_link -> velodyne``
  (identity), ``velodyne -> camera_gray_left`` (from Tr), ``camera_gray_left -> camera_color_{left,right}``
  (from P2 / P3);
* ``/tf`` per frame: ``world -> base_link`` from ``poses.txt`` (cam0 poses) when present.

Stamps come from ``times.txt`` (``stamp = start + t``), never from the wall clock. kitti2bag's odometry
mode lacks the velodyne and ``/tf_static``; kitti2mcap handles raw drives only: this fills that gap.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.data.bag_layout import DEFAULT_START_S, BagNames, frame_stamp_ns
from l2cocc_ros.core.stamps import ns_to_tuple
from l2cocc_ros.core.transforms import invert_transform, quaternion_from_matrix
from l2cocc_ros import exit_codes

__all__ = ["BagSummary", "convert_sequence", "stereo_rig", "main"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class BagSummary:
    """What a conversion wrote."""

    path: Path
    frames: List[int]
    stamps_ns: List[int]
    counts: Dict[str, int]


def stereo_rig(p2: np.ndarray, p3: np.ndarray) -> Dict[str, np.ndarray]:
    """Split KITTI's P2 / P3 (both relative to the rectified cam0 frame) into a ROS stereo rig.

    Returns:
        dict with ``K`` (3x3), ``baseline`` (m), ``T_cam0_left`` / ``T_cam0_right`` (4x4 poses of the colour
        cameras in cam0), ``P_left = [K | 0]`` and ``P_right = [K | -fx * B]`` (3x4).

    Raises:
        ValueError: if P2 and P3 do not share the same K, or the baseline is not positive.
    """
    k = p2[:3, :3]
    if not np.allclose(k, p3[:3, :3], rtol=1e-6, atol=1e-6):
        raise ValueError(f"P2 and P3 have different intrinsics; the pair is not rectified:\n{p2[:3, :3]}\n{p3[:3, :3]}")
    k_inv = np.linalg.inv(k)
    poses = {}
    for name, p in (("left", p2), ("right", p3)):
        t_cam_from_cam0 = k_inv @ p[:3, 3]  # X_cam = X_cam0 + t
        pose = np.eye(4)
        pose[:3, 3] = -t_cam_from_cam0
        poses[name] = pose
    baseline = float(poses["right"][0, 3] - poses["left"][0, 3])
    if baseline <= 0:
        raise ValueError(f"stereo baseline from P2/P3 is {baseline:.4f} m; the right camera must be to the right")
    p_left = np.hstack([k, np.zeros((3, 1))])
    p_right = p_left.copy()
    p_right[0, 3] = -k[0, 0] * baseline
    return {"K": k, "baseline": baseline, "T_cam0_left": poses["left"], "T_cam0_right": poses["right"],
            "P_left": p_left, "P_right": p_right}


class _Messages:
    """Builds rosbags message objects (serialised to CDR without rclpy)."""

    def __init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        self.t = self.store.types

    def header(self, stamp_ns: int, frame: str):
        sec, nsec = ns_to_tuple(stamp_ns)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                             frame_id=frame)

    def image(self, rgb: np.ndarray, stamp_ns: int, frame: str):
        h, w, _ = rgb.shape
        return self.t["sensor_msgs/msg/Image"](header=self.header(stamp_ns, frame), height=h, width=w, encoding="rgb8",
                                               is_bigendian=0, step=3 * w, data=np.ascontiguousarray(rgb).reshape(-1))

    def camera_info(self, p: np.ndarray, size_hw, stamp_ns: int, frame: str):
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame), height=size_hw[0], width=size_hw[1], distortion_model="plumb_bob",
            d=np.zeros(5), k=p[:3, :3].reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
            p=p.reshape(-1).astype(np.float64), binning_x=0, binning_y=0, roi=roi)

    def pointcloud(self, points: np.ndarray, stamp_ns: int, frame: str):
        field = self.t["sensor_msgs/msg/PointField"]
        fields = [field(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(("x", "y", "z", "intensity"))]
        data = np.ascontiguousarray(points[:, :4], dtype="<f4")
        return self.t["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, frame), height=1, width=len(data), fields=fields, is_bigendian=False,
            point_step=16, row_step=16 * len(data), data=data.view(np.uint8).reshape(-1), is_dense=True)

    def tf(self, transforms: Sequence[tuple], stamp_ns: int):
        t = self.t
        items = []
        for parent, child, mat in transforms:
            q = quaternion_from_matrix(mat[:3, :3])
            tr = t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=float(mat[0, 3]), y=float(mat[1, 3]), z=float(mat[2, 3])),
                rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
            items.append(t["geometry_msgs/msg/TransformStamped"](header=self.header(stamp_ns, parent),
                                                                 child_frame_id=child, transform=tr))
        return t["tf2_msgs/msg/TFMessage"](transforms=items)

    def cdr(self, msg) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False)]


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"image file {path} could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _frame_ids(seq_dir: Path, frames: Optional[Sequence[int]], num_times: int) -> List[int]:
    available = sorted(int(p.stem) for p in (seq_dir / "image_2").glob("*.png"))
    if not available:
        raise FileNotFoundError(f"no images in {seq_dir / 'image_2'}")
    if frames is None:
        return available
    missing = sorted(set(frames) - set(available))
    if missing:
        raise FileNotFoundError(f"frames {missing[:10]} have no image in {seq_dir / 'image_2'}")
    too_late = [f for f in frames if f >= num_times]
    if too_late:
        raise ValueError(f"frames {too_late[:10]} are beyond times.txt ({num_times} lines) in {seq_dir}")
    return list(frames)


def convert_sequence(dataset: Path, sequence: str, out: Path, *, frames: Optional[Sequence[int]] = None,
                     storage: str = "mcap", names: BagNames = BagNames(), start_s: float = DEFAULT_START_S,
                     progress: bool = False) -> BagSummary:
    """Convert ``dataset/sequences/<sequence>`` into a rosbag2 directory ``out``.

    Args:
        dataset: root holding ``sequences/``.
        sequence: e.g. "08".
        out: bag directory to create (must not exist). The bag is written under a temporary name next to it
            and moved into place only when complete: a failure leaves nothing behind, a rerun works.
        frames: frame ids to write (default all images).
        storage: "mcap" or "sqlite3".
        names: topic and frame names.
        start_s: stamp of ``times.txt`` 0.0 [s].
        progress: show a tqdm bar.

    Raises:
        FileNotFoundError / ValueError naming the missing or bad file; FileExistsError if ``out`` exists.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    seq_dir = Path(dataset) / "sequences" / sequence
    if not seq_dir.is_dir():
        raise FileNotFoundError(f"sequence directory {seq_dir} does not exist")
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"bag directory {out} already exists; remove it or choose another --out")
    calib = kitti_io.read_calib(seq_dir / "calib.txt", required=("P2", "P3", "Tr"))
    times = kitti_io.read_times(seq_dir / "times.txt")
    poses = kitti_io.read_poses(seq_dir / "poses.txt") if (seq_dir / "poses.txt").is_file() else None
    frame_list = _frame_ids(seq_dir, frames, len(times))
    has_velo = (seq_dir / "velodyne").is_dir()
    stamps = frame_stamp_ns(times[frame_list], start_s)

    rig = stereo_rig(calib["P2"], calib["P3"])
    t_velo_cam0 = invert_transform(calib["Tr"])  # pose of cam0 in the velodyne frame
    static = [(names.base_frame, names.velodyne_frame, np.eye(4)),
              (names.velodyne_frame, names.cam0_frame, t_velo_cam0),
              (names.cam0_frame, names.left_frame, rig["T_cam0_left"]),
              (names.cam0_frame, names.right_frame, rig["T_cam0_right"])]

    m = _Messages()
    counts: Dict[str, int] = {}
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    iterator = zip(frame_list, stamps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(list(iterator), desc=f"kitti2bag {sequence}", unit="frame")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    partial = work / out.name  # the storage file inside keeps the bag's final name
    try:
        with Writer(partial, version=9, storage_plugin=plugin) as writer:
            def conn(topic, msgtype, **kw):
                return writer.add_connection(topic, msgtype, typestore=m.store, **kw)

            c_static = conn("/tf_static", "tf2_msgs/msg/TFMessage", offered_qos_profiles=_latched_qos())
            c_tf = conn("/tf", "tf2_msgs/msg/TFMessage") if poses is not None else None
            c_li, c_ri = conn(names.left_image, "sensor_msgs/msg/Image"), conn(names.right_image, "sensor_msgs/msg/Image")
            c_lc = conn(names.left_info, "sensor_msgs/msg/CameraInfo")
            c_rc = conn(names.right_info, "sensor_msgs/msg/CameraInfo")
            c_pc = conn(names.pointcloud, "sensor_msgs/msg/PointCloud2") if has_velo else None

            def write(c, stamp, msg):
                writer.write(c, int(stamp), m.cdr(msg))
                counts[c.topic] = counts.get(c.topic, 0) + 1

            write(c_static, stamps[0], m.tf(static, stamps[0]))
            for frame, stamp in iterator:
                name = f"{frame:06d}"
                left = _read_rgb(seq_dir / "image_2" / f"{name}.png")
                right = _read_rgb(seq_dir / "image_3" / f"{name}.png")
                if left.shape != right.shape:
                    raise ValueError(f"frame {name}: image_2 is {left.shape[:2]} but image_3 is {right.shape[:2]}")
                if c_tf is not None:
                    if frame >= len(poses):
                        raise ValueError(f"frame {name} is beyond poses.txt ({len(poses)} lines) in {seq_dir}")
                    t_world_base = poses[frame] @ calib["Tr"]  # cam0 pose in world @ velodyne pose in cam0
                    write(c_tf, stamp, m.tf([(names.world_frame, names.base_frame, t_world_base)], stamp))
                write(c_li, stamp, m.image(left, stamp, names.left_frame))
                write(c_lc, stamp, m.camera_info(rig["P_left"], left.shape[:2], stamp, names.left_frame))
                write(c_ri, stamp, m.image(right, stamp, names.right_frame))
                write(c_rc, stamp, m.camera_info(rig["P_right"], right.shape[:2], stamp, names.right_frame))
                if c_pc is not None:
                    points = kitti_io.read_velodyne(seq_dir / "velodyne" / f"{name}.bin")
                    write(c_pc, stamp, m.pointcloud(points, stamp, names.velodyne_frame))
        os.replace(partial, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %d frames of sequence %s to %s", len(frame_list), sequence, out)
    return BagSummary(path=out, frames=frame_list, stamps_ns=[int(s) for s in stamps], counts=counts)


def _frames_arg(text: str) -> List[int]:
    """Parse "0-9", "0,5,10" or "3"."""
    out: List[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad frame range {part!r}; use e.g. 0-9 or 0,5,10") from None
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc kitti2bag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, type=Path, help="root holding sequences/")
    parser.add_argument("-s", "--sequence", required=True, help="sequence id, e.g. 08")
    parser.add_argument("-o", "--out", required=True, type=Path, help="bag directory to create")
    parser.add_argument("-f", "--frames", type=_frames_arg, default=None, help="frame ids, e.g. 0-99 (default all)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--start", type=float, default=DEFAULT_START_S, help="stamp of times.txt 0.0 [s]")
    defaults = BagNames()
    for field in defaults.__dataclass_fields__:
        parser.add_argument(f"--{field.replace('_', '-')}", default=getattr(defaults, field),
                            help=f"{field.replace('_', ' ')} name")
    args = parser.parse_args(argv)
    names = BagNames(**{f: getattr(args, f) for f in defaults.__dataclass_fields__})
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = convert_sequence(args.dataset, args.sequence, args.out, frames=args.frames, storage=args.storage,
                                   names=names, start_s=args.start, progress=True)
    except (FileNotFoundError, FileExistsError) as exc:  # a missing input or an existing output
        print(f"l2cocc kitti2bag: error: {exc} (nothing written to {args.out})", file=sys.stderr)
        return exit_codes.USAGE
    except ValueError as exc:  # bad data met while converting
        print(f"l2cocc kitti2bag: error: {exc} (nothing written to {args.out})", file=sys.stderr)
        return exit_codes.FAILED
    for topic, n in sorted(summary.counts.items()):
        print(f"{topic:45s} {n:6d}")
    print(f"wrote {summary.path} ({len(summary.frames)} frames)")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
