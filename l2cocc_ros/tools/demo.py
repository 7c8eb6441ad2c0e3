"""``make demo``: the whole live path on a fresh machine, no ROS install, GPU, data or network needed.

1. generates (or reuses) a short synthetic KITTI-format sequence (``l2cocc synth``, a seed the shipped
   checkpoint never saw in training);
2. converts it to a rosbag2 (``l2cocc kitti2bag``);
3. starts three processes talking DDS on loopback only (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, a
   private domain id): the perception node with the shipped camera model (``--variant l``: the LiDAR
   teacher), the scorer, and the replay;
4. ends with a table (frames, drops, latency p50/p95, IoU, mIoU) and PNG renders of predictions next to
   the ground truth in ``demo_out/``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from l2cocc_ros import exit_codes

REPO = Path(__file__).resolve().parents[2]

__all__ = ["shipped_checkpoint", "run_demo", "main"]


def shipped_checkpoint(variant: str = "c") -> Path:
    """The shipped model the demo runs: "c" the camera model (stereo -> grid), "l" the LiDAR teacher."""
    from l2cocc_ros.core.checkpoint import SHIPPED_CAMERA_CHECKPOINT, SHIPPED_LIDAR_CHECKPOINT

    return {"c": SHIPPED_CAMERA_CHECKPOINT, "l": SHIPPED_LIDAR_CHECKPOINT}[variant]


def _python(module: str, *args: str) -> List[str]:
    return [sys.executable, "-P", "-m", module, *args]


def _ensure_dataset(root: Path, frames: int, seed: int, width: int, height: int) -> bool:
    """Write the synthetic sequence unless the same one is already there; True if (re)written."""
    from l2cocc_ros.core.data.synth import SynthConfig, write_sequence

    stamp = root / "demo_dataset.json"
    want = {"frames": frames, "seed": seed, "width": width, "height": height}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return False
    if root.exists():
        import shutil

        shutil.rmtree(root)
    print(f"[demo] generating {frames} synthetic frames (seed {seed}, {width}x{height}) in {root}", flush=True)
    write_sequence(root, "08", frames=frames, seed=seed, config=SynthConfig(width=width, height=height))
    stamp.write_text(json.dumps(want))
    return True


def _ensure_bag(root: Path, bag: Path, rewrite: bool) -> None:
    """``l2cocc kitti2bag`` of the sequence (as its own process, like the other tools of the demo)."""
    if bag.exists() and not rewrite:
        return
    if bag.exists():
        import shutil

        shutil.rmtree(bag)
    proc = subprocess.run(_python("l2cocc_ros.tools.kitti2bag", "-d", str(root), "-s", "08", "-o", str(bag)),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"l2cocc kitti2bag failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"[demo] {proc.stdout.strip().splitlines()[-1]}", flush=True)


def _checkpoint_meta(checkpoint: Path) -> Dict[str, str]:
    """Variant and preset recorded in one of our checkpoints (the node is configured from them)."""
    from l2cocc_ros.core.checkpoint import read_state_dict

    _, kind, obj = read_state_dict(checkpoint)
    meta = (obj.get("meta") or {}) if kind == "ours" else {}
    if not meta.get("variant") or not meta.get("preset"):
        raise ValueError(f"checkpoint {checkpoint} records no variant/preset; the demo needs an l2cocc_ros checkpoint")
    return {"variant": str(meta["variant"]), "preset": str(meta["preset"])}


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _node_and_replay_commands(checkpoint: Path, meta: Dict[str, str], bag: Path,
                              rate: float) -> Tuple[List[str], List[str]]:
    """The node's command (its inputs remapped to the bag's topics) and the replay's, which waits until
    every one of those inputs has a subscriber: a set played before the node listens is lost uncounted."""
    from l2cocc_ros.core.data.bag_layout import BagNames

    names = BagNames()
    inputs = {"left/image": names.left_image, "left/camera_info": names.left_info,
              "right/image": names.right_image, "right/camera_info": names.right_info}
    if meta["variant"] == "l":  # the only variant whose node subscribes to the cloud
        inputs["pointcloud"] = names.pointcloud
    remaps = [arg for name, topic in inputs.items() for arg in ("-r", f"~/input/{name}:={topic}")]
    node_cmd = _python(
        "l2cocc_ros.ros.node", "--ros-args",
        "--params-file", str(REPO / "config" / "l2cocc_node.param.yaml"),
        "--params-file", str(REPO / "config" / "common.param.yaml"),
        "-p", f"checkpoint:={checkpoint}",  # variant and preset: the node reads them from the file
        "-p", "device:=cpu", "-p", "precision:=fp32", *remaps)
    replay_cmd = _python("l2cocc_ros.tools.replay", str(bag), "--rate", str(rate),
                         "--wait-for", *inputs.values(), "--wait-timeout", "300")
    return node_cmd, replay_cmd


def run_demo(out: Path, checkpoint: Path, *, frames: int = 8, seed: int = 1234, rate: float = 0.1,
             width: int = 1241, height: int = 376, renders: int = 2, timeout_s: float = 600.0) -> Dict[str, object]:
    """Run the demo; returns the scorer's summary plus drop counts. Raises RuntimeError with the log tail."""
    out.mkdir(parents=True, exist_ok=True)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (the repository ships "
                                f"{shipped_checkpoint().relative_to(REPO)}; see README 'Training')")
    data = out / "data"
    rewritten = _ensure_dataset(data, frames, seed, width, height)
    bag = out / "bag"
    _ensure_bag(data, bag, rewritten)

    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(20, 99)))
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_messages.xml"))
    env["PYTHONUNBUFFERED"] = "1"
    meta = _checkpoint_meta(checkpoint)
    node_cmd, replay_cmd = _node_and_replay_commands(checkpoint, meta, bag, rate)
    pred = out / "predictions"
    score_json = out / "score.json"
    score_cmd = _python("l2cocc_ros.tools.score", "-d", str(data), "-s", "08", "-o", str(pred),
                        "--frames", str(frames), "--idle-timeout", "30", "--timeout", str(timeout_s),
                        "--json", str(score_json))
    logs = {name: open(out / f"{name}.log", "w") for name in ("node", "score", "replay")}
    procs: Dict[str, subprocess.Popen] = {}
    try:
        print("[demo] starting node, scorer and replay (logs in demo_out/*.log)", flush=True)
        procs["score"] = subprocess.Popen(score_cmd, env=env, cwd=REPO, stdout=logs["score"], stderr=subprocess.STDOUT)
        procs["node"] = subprocess.Popen(node_cmd, env=env, cwd=REPO, stdout=logs["node"], stderr=subprocess.STDOUT)
        procs["replay"] = subprocess.Popen(replay_cmd, env=env, cwd=REPO, stdout=logs["replay"],
                                           stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while procs["score"].poll() is None and time.monotonic() < deadline:
            if procs["node"].poll() is not None:
                break
            time.sleep(0.2)
        replay_rc = procs["replay"].wait(max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs.values():
            _stop(proc)
        for f in logs.values():
            f.close()
    if not score_json.is_file():
        tails = {n: (out / f"{n}.log").read_text()[-2000:] for n in logs}
        raise RuntimeError("the scorer wrote no result:\n" + "\n".join(f"--- {n}.log\n{t}" for n, t in tails.items()))
    summary = json.loads(score_json.read_text())
    summary["frames_sent"] = frames
    summary["dropped"] = frames - summary["frames"]
    summary["replay_exit_code"] = replay_rc
    summary["model"] = f"{meta['preset']} (L2COcc-{meta['variant'].upper()})"
    summary["renders"] = _render(data, pred, out, summary, renders)
    return summary


def _render(data: Path, pred: Path, out: Path, summary: Dict[str, object], count: int) -> List[str]:
    from l2cocc_ros.core.classes import semantic_kitti
    from l2cocc_ros.core.data.predictions import load_ground_truth, read_prediction
    from l2cocc_ros.tools.rendering import render_grid

    table = semantic_kitti()
    files = sorted((pred / "sequences" / "08" / "predictions").glob("*.label"))
    written = []
    for path in files[:: max(1, len(files) // max(count, 1))][:count]:
        labels = read_prediction(path, table)
        gt = load_ground_truth(data, "08", path.stem, table)
        image = render_grid(labels, table, gt=gt, title=f"l2cocc demo: {summary['model']}, synthetic seq 08 frame {path.stem}")
        target = out / f"frame_{path.stem}.png"
        image.save(target)
        written.append(str(target))
    return written


def _table(summary: Dict[str, object]) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    def ms(v):
        return "n/a" if v is None else f"{v:.0f}"

    rows = [("model", summary["model"]), ("frames sent", summary["frames_sent"]), ("grids received", summary["frames"]),
            ("dropped (newest frame wins)", summary["dropped"]), ("scored frames", summary["scored_frames"]),
            ("latency p50 [ms]", ms(summary["latency_ms_p50"])), ("latency p95 [ms]", ms(summary["latency_ms_p95"])),
            ("IoU [%]", pct(summary["iou"])), ("mIoU [%]", pct(summary["miou"]))]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{'':-<{width + 12}}"] + [f"{k:<{width}}  {v:>8}" for k, v in rows] + [f"{'':-<{width + 12}}"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "demo_out", help="output folder")
    parser.add_argument("--variant", choices=("c", "l"), default="c",
                        help="which shipped model: c = the camera model (stereo -> grid), l = the LiDAR teacher")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="another l2cocc_ros checkpoint instead (its preset and variant configure the node)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the synthetic sequence")
    parser.add_argument("--seed", type=int, default=1234, help="world seed (not one used in training)")
    parser.add_argument("--rate", type=float, default=0.1, help="replay speed (0.1: one frame per second)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this long [s]")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        summary = run_demo(args.out, args.checkpoint or shipped_checkpoint(args.variant), frames=args.frames,
                           seed=args.seed, rate=args.rate,
                           timeout_s=args.timeout)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"make demo: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    print(_table(summary))
    for path in summary["renders"]:
        print(f"render: {path}")
    print(f"[demo] done in {time.monotonic() - t0:.0f} s; predictions in {args.out / 'predictions'}")
    return exit_codes.OK if summary["frames"] > 0 else exit_codes.FAILED


if __name__ == "__main__":
    sys.exit(main())
