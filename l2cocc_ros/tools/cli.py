"""The ``l2cocc`` command: one sub-command per tool module, each with its own ``main(argv)``.

Sub-command modules are imported only when used, so ``l2cocc synth`` does not import rclpy or torch.
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

from l2cocc_ros import exit_codes

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line help)
COMMANDS = {
    "synth": ("l2cocc_ros.tools.synth", "write a synthetic sequence in the SemanticKITTI layout"),
    "synth-benchmark": ("l2cocc_ros.tools.synth_benchmark",
                        "generate the synthetic benchmark (training + held-out worlds, labels, stereo, manifest)"),
    "preprocess": ("l2cocc_ros.tools.preprocess", "make label (1:1, 1:2) and stereo-depth files for a dataset"),
    "train": ("l2cocc_ros.tools.train", "train L2COcc-C / -L / -D (Lightning, one GPU or DDP)"),
    "check-data": ("l2cocc_ros.tools.check_data", "validate a dataset's files before training (also run by train)"),
    "eval": ("l2cocc_ros.tools.evaluate", "score predictions or a checkpoint on a split (official metric)"),
    "ckpt-check": ("l2cocc_ros.tools.ckpt_check", "check that a checkpoint loads strictly into a preset"),
    "node": ("l2cocc_ros.ros.node", "run the perception node (same as ros2 run l2cocc_ros l2cocc_node)"),
    "kitti2bag": ("l2cocc_ros.tools.kitti2bag", "convert a SemanticKITTI / KITTI odometry sequence to rosbag2"),
    "replay": ("l2cocc_ros.tools.replay", "play a rosbag2 into DDS (raw CDR), optionally with /clock"),
    "score": ("l2cocc_ros.tools.score", "score the node's live grids against ground truth during a replay"),
    "render": ("l2cocc_ros.tools.render", "render a grid (BEV + 3D view) to PNG"),
    "bench": ("l2cocc_ros.tools.bench", "benchmark the node overhead and the engine per stage"),
    "export-onnx": ("l2cocc_ros.tools.export_onnx", "export the camera model to ONNX and check it"),
    "demo": ("l2cocc_ros.tools.demo", "the end-to-end demo of `make demo` (synthetic bag -> node -> scores)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: l2cocc COMMAND [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "'l2cocc COMMAND --help' shows the options of a command."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return exit_codes.OK
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"l2cocc: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return exit_codes.USAGE
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
