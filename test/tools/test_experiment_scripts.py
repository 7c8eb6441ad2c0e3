"""The camera experiment's analysis scripts (``scripts/camera_report.py``, ``scripts/class_prior_sweep.py``)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from l2cocc_ros.core.checkpoint import save_checkpoint
from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset
from l2cocc_ros.core.model.l2cocc import build_model
from l2cocc_ros.tools.evaluate import evaluate_model
from l2cocc_ros.tools.synth_benchmark import generate_benchmark

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validation_block(step: int, iou: float, miou: float, road: float) -> str:
    classes = "\n".join(f"{name:<16} {value:.2f}" for name, value in (("car", 0.0), ("road", road), ("pole", 0.01)))
    return (f"INFO l2cocc_ros.core.training.system: step {step} validation:\nclass          IoU [%]\n{classes}\n\n"
            f"completion IoU {iou:.2f}  precision 30.00  recall 70.00\nmIoU {miou:.2f}  (100 voxels)\n")


def test_camera_report_reads_logs_and_tables_the_last_validation(tmp_path):
    report = load_script("camera_report")
    for run, rows in {"c_s1": [(50, 10.0, 2.0, 20.0), (100, 20.0, 4.0, 40.0)],
                      "c_s2": [(50, 12.0, 3.0, 30.0), (100, 24.0, 6.0, 50.0)]}.items():
        (tmp_path / "cam" / run).mkdir(parents=True)
        log = "noise\n" + "".join(validation_block(*r) for r in rows)
        log += validation_block(100, 20.0 if run == "c_s1" else 24.0, 4.0 if run == "c_s1" else 6.0,
                                40.0 if run == "c_s1" else 50.0)  # a resumed run validates step 100 again
        (tmp_path / "cam" / run / "train.log").write_text(log)
    vals = report.read_validations(tmp_path / "cam" / "c_s1" / "train.log")
    assert [v["step"] for v in vals] == [50, 100]
    assert vals[1] == {"step": 100, "classes": {"car": 0.0, "road": 40.0, "pole": 0.01}, "iou": 20.0, "miou": 4.0}
    assert report.group_of("d_no_logit_s2") == ("d_no_logit", "s2") and report.group_of("l") == ("l", "-")
    table = report.table({"c_s1": vals, "c_s2": report.read_validations(tmp_path / "cam" / "c_s2" / "train.log")})
    row = next(line for line in table.splitlines() if line.startswith("| c |"))
    assert row == "| c | s1 s2 | 100 / 100 | 22.0 ± 2.0 | 5.0 ± 1.0 | 45.0 ± 5.0 |"
    assert "below 0.05 % for every run: car, pole." in table


def test_class_prior_sweep_shifts_the_argmax_towards_empty(tmp_path):
    sweep = load_script("class_prior_sweep").sweep
    bench = tmp_path / "bench"
    generate_benchmark(bench, train_worlds=1, train_frames=1, heldout_worlds=1, heldout_frames=1, stride=3,
                       width=320, height=96, progress=False)
    exp = get_preset("micro_l2cocc_c")
    torch.manual_seed(0)
    model = build_model(exp.model)
    save_checkpoint(tmp_path / "c.pt", model, exp)
    _, metrics = sweep(tmp_path / "c.pt", bench, ["20"], taus=[0.0, 0.5, 1.0, 3.0])
    scores = {tau: m.compute() for tau, m in metrics.items()}
    # tau 0 is the plain argmax: the same scores as l2cocc eval's
    dataset = SemanticKITTIDataset(bench / "data", ["20"], modalities="camera", labels_root=bench / "labels",
                                   stereo_root=bench / "stereo", input_size=exp.model.image_size, lidar_depth=False)
    plain = evaluate_model(model, dataset, progress=False).compute()
    assert scores[0.0]["iou"] == pytest.approx(plain["iou"]) and scores[0.0]["miou"] == pytest.approx(plain["miou"])
    # empty has the smallest weight, so a larger tau predicts empty on a superset of voxels: recall never rises
    recalls = [scores[tau]["recall"] for tau in (0.0, 0.5, 1.0, 3.0)]
    assert all(a >= b for a, b in zip(recalls, recalls[1:])) and recalls[0] > recalls[-1]
