"""ONNX export of the camera model: each custom translation against torch, then the tiny model end to end."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.model.l2cocc import build_model
from l2cocc_ros.tools import export_onnx as ex


def _roundtrip(module: nn.Module, args, tmp_path, opset: int = 17):
    path = tmp_path / "m.onnx"
    with ex.onnx_symbolics(opset), torch.no_grad():
        torch.onnx.export(module.eval(), args, str(path), opset_version=opset, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    with torch.no_grad():
        ref = module(*args)
    return sess.run(None, feed)[0], ref.numpy()


class _Inv(nn.Module):
    def forward(self, a, b):
        return torch.cat([torch.inverse(a).flatten(), b.inverse().flatten()])


def test_inverse_translation_matches_torch(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 1, 3, 3, generator=g) + 3 * torch.eye(3)
    p2 = torch.tensor([[718.856, 0, 607.19, 45.38], [0, 718.856, 185.2, -0.11], [0, 0, 1, 0.0038], [0, 0, 0, 1.0]])
    got, ref = _roundtrip(_Inv(), (a, p2[None, None]), tmp_path)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


class _Splat(nn.Module):
    def forward(self, src, idx):
        return src.new_zeros(5, src.shape[1]).index_add_(0, idx, src)


def test_index_add_accumulates_duplicates(tmp_path):
    src = torch.arange(12, dtype=torch.float32).view(6, 2)
    idx = torch.tensor([0, 3, 3, 3, 4, 0])
    got, ref = _roundtrip(_Splat(), (src, idx), tmp_path)
    np.testing.assert_allclose(got, ref)
    assert got[3, 0] == 2 + 4 + 6  # three rows landed in voxel 3


class _Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.batch_stats = nn.BatchNorm2d(4, track_running_stats=False)
        self.running = nn.BatchNorm2d(4)
        with torch.no_grad():
            for bn in (self.batch_stats, self.running):
                bn.weight.uniform_(0.5, 2.0)
                bn.bias.uniform_(-1.0, 1.0)
            self.running.running_mean.uniform_(-1, 1)
            self.running.running_var.uniform_(0.5, 2)

    def forward(self, x, y):
        m = x[0, 0] > 0
        m &= y[0, 0] > 0
        return self.running(self.batch_stats(x)) + m.float()


def test_batch_norm_and_iand_translations(tmp_path):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 4, 6, 7, generator=g) * 3 + 1, torch.randn(1, 4, 6, 7, generator=g)
    got, ref = _roundtrip(_Norms(), (x, y), tmp_path)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_wrapper_rejects_non_camera_models_and_bad_output():
    with pytest.raises(TypeError, match="camera"):
        ex.CameraExportWrapper(nn.Linear(2, 2))
    model = build_model(get_preset("tiny_l2cocc_c").model)
    with pytest.raises(ValueError, match="output"):
        ex.CameraExportWrapper(model, output="probs")
    with pytest.raises(ValueError, match="opset"):
        ex.export_camera_model(model, {}, "/tmp/never.onnx", opset=13)


def test_cli_errors(tmp_path, capsys):
    assert ex.main(["--config", "tiny_l2cocc_l", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "camera variants" in capsys.readouterr().err
    assert ex.main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    assert ex.main(["--config", "no_such_preset", "--out", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_tiny_camera_model_exports_and_matches_onnxruntime(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert ex.main(["--config", "tiny_l2cocc_c", "--out", str(out)]) == 0
    assert "(1, 1, 3, 96, 320)" in capsys.readouterr().out
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(ex.INPUT_NAMES)
    assert [tuple(i.shape) for i in sess.get_inputs()][:2] == [(1, 1, 3, 96, 320), (1, 1, 3, 3)]
    assert sess.get_outputs()[0].shape == [1, 20, 256, 256, 32]
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["l2cocc_model"] == "tiny_l2cocc_c" and meta["l2cocc_P2"].startswith("[[718.856, 0.0, 607.1928")
    # another realistic frame than the traced one (same geometry, new image and depth): the data-dependent
    # selections (proposal, EVT queries) must follow the data, not the trace
    torch.manual_seed(0)  # the CLI's weights for a preset without checkpoint
    model = build_model(get_preset("tiny_l2cocc_c").model).eval()
    inputs = ex.example_inputs(get_preset("tiny_l2cocc_c").model, seed=3)
    res = ex.check_onnx(out, model, inputs)
    assert res["max_abs_diff"] < 1e-2, res
    assert res["argmax_agreement_pct"] > 99.9, res
    assert res["onnxruntime_ms"] > 0 and res["onnx_nodes"] > 100
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        ex.check_onnx(tmp_path / "nope.onnx", model, inputs)
