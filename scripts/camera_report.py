"""Held-out tables and the learning-curve picture of the camera experiment (``scripts/camera_experiment.sh``).

Reads the validation tables that ``l2cocc train`` logs (``step N validation:`` + per-class IoU, completion IoU,
mIoU; the validation split is the benchmark's held-out worlds) from ``RUNS/<run>/train.log`` and writes:

* a Markdown table, one row per run group (``l``, ``c``, ``d``, ``d_<ablation>``): the last validation of every
  seed, mean +- spread (half the max-min range over seeds) of IoU, mIoU and the IoU of each class that some run
  scores (the others are listed below the table);
* ``--png``: held-out mIoU (and IoU) against training steps for every run (-C, -D and the -L teacher).

Example::

    python -P scripts/camera_report.py runs/cam runs/cam_long --png docs/camera_curve.png > docs/camera_results.md
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

_STEP = re.compile(r"step (\d+) validation:")
_CLASS = re.compile(r"^([a-z-]+)\s+(\d+\.\d+)$")
_IOU = re.compile(r"^completion IoU (\d+\.\d+)")
_MIOU = re.compile(r"^mIoU (\d+\.\d+)")


def read_validations(log: Path) -> List[Dict[str, object]]:
    """Every validation in a training log: ``{"step", "iou", "miou", "classes": {name: IoU %}}``."""
    out: List[Dict[str, object]] = []
    current = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _STEP.search(line)
        if m:
            current = {"step": int(m.group(1)), "classes": {}}
            continue
        if current is None:
            continue
        line = line.strip()
        if (m := _CLASS.match(line)):
            current["classes"][m.group(1)] = float(m.group(2))
        elif (m := _IOU.match(line)):
            current["iou"] = float(m.group(1))
        elif (m := _MIOU.match(line)):
            current["miou"] = float(m.group(1))
            by_step = {v["step"]: i for i, v in enumerate(out)}
            if current["step"] in by_step:  # a resumed run validates a step again: keep the newest
                out[by_step[current["step"]]] = current
            else:
                out.append(current)
            current = None
    return out


def group_of(run: str) -> Tuple[str, str]:
    """``c_s1`` -> (``c``, ``s1``); ``d_no_logit_s2`` -> (``d_no_logit``, ``s2``); ``l`` -> (``l``, ``-``)."""
    m = re.match(r"^(.*)_(s\d+)$", run)
    return (m.group(1), m.group(2)) if m else (run, "-")


def _mean_spread(values: List[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {(max(values) - min(values)) / 2:.1f}"


def table(runs: Dict[str, List[Dict[str, object]]]) -> str:
    """Markdown: one row per run group, last validation of each seed, mean ± half-range over seeds."""
    groups: Dict[str, List[Tuple[str, Dict[str, object]]]] = defaultdict(list)
    for run, vals in sorted(runs.items()):
        if vals:
            group, seed = group_of(run)
            groups[group].append((seed, vals[-1]))
    if not groups:
        return "(no validation yet)\n"
    names = list(next(iter(groups.values()))[0][1]["classes"])
    # a column for every class some run scores; the classes no run scores are named below the table
    classes = [c for c in names if any(v["classes"].get(c, 0.0) >= 0.05 for items in groups.values()
                                       for _, v in items)]
    zero = [c for c in names if c not in classes]
    head = ["run", "seeds", "steps", "IoU", "mIoU"] + classes
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, items in groups.items():
        lasts = [v for _, v in items]
        row = [group, " ".join(s for s, _ in items), " / ".join(str(v["step"]) for v in lasts),
               _mean_spread([v["iou"] for v in lasts]), _mean_spread([v["miou"] for v in lasts])]
        row += [_mean_spread([v["classes"].get(c, 0.0) for v in lasts]) for c in classes]
        lines.append("| " + " | ".join(row) + " |")
    if zero:
        lines.append(f"\nIoU below 0.05 % for every run: {', '.join(zero)}.")
    return "\n".join(lines) + "\n"


def plot(runs: Dict[str, List[Dict[str, object]]], path: Path) -> None:
    """Held-out mIoU and IoU against steps for every run (one line per run; the -L teacher dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run, vals in sorted(runs.items()):
        group = group_of(run)[0].split("/")[-1]
        if not vals:
            continue
        steps = [v["step"] for v in vals]
        # the experiment's arms; the tempered-weights recipe (w075) in lighter colours; ablations grey
        color = {"c": "tab:blue", "d": "tab:red", "l": "black", "c_w075": "tab:green",
                 "d_w075": "tab:orange"}.get(group, "tab:gray")
        style = dict(color=color, marker="o", label=f"{run} (teacher)" if group == "l" else run,
                     linestyle="--" if group == "l" else ("-" if run.endswith("s1") else ":"))
        axes[0].plot(steps, [v["miou"] for v in vals], **style)
        axes[1].plot(steps, [v["iou"] for v in vals], **style)
    for ax, name in zip(axes, ("mIoU [%]", "IoU [%]")):
        ax.set_xlabel("training step")
        ax.set_ylabel(f"held-out {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("micro L2COcc on the synthetic benchmark: held-out worlds 20-23 (40 frames)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="folders of run folders (each with train.log)")
    p.add_argument("--png", type=Path, default=None, help="write the learning curves here")
    args = p.parse_args()
    runs, seen = {}, set()
    for folder in args.runs:
        for d in sorted(folder.iterdir()):
            if (d / "train.log").is_file() and d.resolve() not in seen:  # a run linked into two folders counts once
                seen.add(d.resolve())
                name = d.name if d.name not in runs else f"{folder.name}/{d.name}"  # same run name, other folder
                runs[name] = read_validations(d / "train.log")
    sys.stdout.write(table(runs))
    if args.png is not None:
        plot(runs, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
