"""MSNet3D / MSNet2D: the official state_dict layout, strict loading of checkpoint files, and the forward pass
against the statistics the original code recorded under the published weight and input rules (pipeline case:
116x245 padded top/right to 128x256, cropped back, VoxFormer's depth)."""
import numpy as np
import pytest
import torch

from l2cocc_ros.core.checkpoint import CheckpointMismatchError
from l2cocc_ros.core.stereo.msnet import MSNet2D, MSNet3D
from l2cocc_ros.core.stereo.msnet.backend import (crop_to_image, load_msnet_weights, pad_to_canvas, canvas_for,
                                                  voxformer_depth)

from msnet_refutil import manifest, normalise, refvec, stats_errors, stereo_pair, weight_rule_state_dict

MODELS = {"msnet3d": MSNet3D, "msnet2d": MSNet2D}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_equals_the_manifest(name):
    ref = manifest(name)
    sd = MODELS[name]().state_dict()
    ours = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    assert ours == ref["entries"]  # keys, order, shapes, dtypes
    assert sum(v.numel() for k, v in sd.items() if v.dtype == torch.float32
               and not k.endswith(("running_mean", "running_var"))) == ref["num_parameters"]
    model = MODELS[name]()
    flags = {n: m.use_res_connect for n, m in model.named_modules() if hasattr(m, "use_res_connect")}
    assert flags == ref["mobilev2_residual_flags"]  # the 3-D blocks never add their input


def _write_official(path, state_dict):
    """The layout of MobileStereoNet's train.py: nn.DataParallel keys under 'model', plus epoch and optimizer."""
    torch.save({"epoch": 399, "model": {f"module.{k}": v for k, v in state_dict.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]}}, path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_official_layout_loads_strictly(name, tmp_path):
    sd = weight_rule_state_dict(name)
    _write_official(tmp_path / "w.ckpt", sd)
    model = MODELS[name]()
    load_msnet_weights(model, tmp_path / "w.ckpt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # old files without num_batches_tracked load too (unused in eval)
    _write_official(tmp_path / "old.ckpt", {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")})
    load_msnet_weights(MODELS[name](), tmp_path / "old.ckpt")


def test_renamed_or_reshaped_key_is_refused_by_name(tmp_path):
    sd = weight_rule_state_dict("msnet3d")
    renamed = dict(sd)
    renamed["hourglass1.conv1.conv.0.weight"] = renamed.pop("encoder_decoder1.conv1.conv.0.weight")
    _write_official(tmp_path / "renamed.ckpt", renamed)
    with pytest.raises(CheckpointMismatchError) as exc:
        load_msnet_weights(MSNet3D(), tmp_path / "renamed.ckpt")
    text = str(exc.value)
    assert "missing in checkpoint: 1 key(s)" in text and "encoder_decoder1.conv1.conv.0.weight" in text
    assert "unexpected in checkpoint: 1 key(s)" in text and "hourglass1.conv1.conv.0.weight" in text
    reshaped = dict(sd)
    reshaped["classif3.2.weight"] = torch.zeros(48, 32, 3, 3, 3)  # an MSNet2D-like head
    _write_official(tmp_path / "reshaped.ckpt", reshaped)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)wrong shape: 1 key.*classif3\.2\.weight \(checkpoint "
                                                      r"\[48, 32, 3, 3, 3\], model \[1, 32, 3, 3, 3\]\)"):
        load_msnet_weights(MSNet3D(), tmp_path / "reshaped.ckpt")
    # an MSNet2D file is not an MSNet3D file
    _write_official(tmp_path / "2d.ckpt", weight_rule_state_dict("msnet2d"))
    with pytest.raises(CheckpointMismatchError, match="preconv11"):
        load_msnet_weights(MSNet3D(), tmp_path / "2d.ckpt")


def test_weight_rule_matches_the_recorded_self_check():
    for name in MODELS:
        sd = weight_rule_state_dict(name)
        for key, check in refvec(name)["weight_rule_checks"].items():
            v = sd[key].double()
            assert float(v.sum()) == pytest.approx(check["sum"], rel=1e-9, abs=1e-9), key
            assert float(v.abs().sum()) == pytest.approx(check["abs_sum"], rel=1e-9, abs=1e-9), key
            np.testing.assert_array_equal(v.reshape(-1)[:3].numpy(), check["first"][:v.numel()])


SUBMODULES = {"feature_extraction.left.firstconv": "feature_extraction.firstconv",
              **{f"feature_extraction.left.layer{i}": f"feature_extraction.layer{i}" for i in range(1, 5)},
              **{f"hourglass1.{m}": f"encoder_decoder1.{m}"
                 for m in ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "redir1", "redir2")}}


def _pipeline_run(name, dtype):
    """The recorded pipeline case through our model and our pad / crop / depth functions; every block tapped."""
    case = refvec(name)["pipeline_pad_crop"]
    h, w = case["raw_input_size_HxW"]
    raw_l, raw_r = stereo_pair(h, w)
    assert raw_l.sum() == pytest.approx(case["raw_input_checks"]["left_raw_sum"], rel=1e-12)
    assert raw_r.sum() == pytest.approx(case["raw_input_checks"]["right_raw_sum"], rel=1e-12)
    canvas = canvas_for((h, w))  # "the next valid size" of a non-KITTI camera
    assert list(canvas) == case["padded_to_HxW"]
    model = MODELS[name]().eval()
    model.load_state_dict(weight_rule_state_dict(name), strict=True)
    model.to(dtype)
    left, top, right = pad_to_canvas(torch.from_numpy(normalise(raw_l))[None].to(dtype), canvas)
    right_img, _, _ = pad_to_canvas(torch.from_numpy(normalise(raw_r))[None].to(dtype), canvas)
    assert (top, right) == (case["run_info"]["float64"]["top_pad"], case["run_info"]["float64"]["right_pad"])
    taps = {"input.left": left, "input.right": right_img}
    hooks = []
    for tap, path in SUBMODULES.items():
        def hook(_m, _i, out, tap=tap):
            taps.setdefault(tap, out.detach().clone())  # the first call is the left image's
        hooks.append(model.get_submodule(path).register_forward_hook(hook))
    with torch.no_grad():
        disp = model(left, right_img, taps=taps)
    for hk in hooks:
        hk.remove()
    taps["hourglass2.input"], taps["hourglass3.input"] = taps["hourglass1"], taps["hourglass2"]
    taps["disparity.cropped"] = crop_to_image(disp, top, (h, w))
    taps["depth_m.float32_voxformer"] = voxformer_depth(taps["disparity.cropped"][0].float(), 388.1823)
    return case, taps


def _check_blocks(case, taps, **tol):
    ref = case["float64"]
    failures = {name: errs for name, rec in ref.items() if name != "depth_m.float32_voxformer"
                for errs in [stats_errors(taps[name], rec, **tol)] if errs}
    assert not failures, "\n".join(f"{n}: {e[:3]}" for n, e in failures.items())
    assert set(ref) <= set(taps)


def test_msnet2d_float64_matches_the_original_block_by_block():
    case, taps = _pipeline_run("msnet2d", torch.float64)
    _check_blocks(case, taps, rel=1e-6)
    depth = taps["depth_m.float32_voxformer"]
    assert depth.dtype == torch.float32
    assert not stats_errors(depth, case["float64"]["depth_m.float32_voxformer"], rel=1e-6)


def test_msnet3d_float32_matches_the_original_within_the_recorded_gaps():
    case, taps = _pipeline_run("msnet3d", torch.float32)
    _check_blocks(case, taps, gap_factor=3.0)
    f32 = {k: v for k, v in case["float32"].items() if k != "depth_m.float32_voxformer"}
    _check_blocks({"float64": f32}, taps, rel=1e-6)  # and the original's own float32 run, nearly bit for bit
    rec = case["float64"]["depth_m.float32_voxformer"]
    disp_gap = case["float64"]["disparity.cropped"]["max_abs_diff_vs_other_dtype"]
    depth_tol = 3.0 * disp_gap * rec["max"] / case["float64"]["disparity.cropped"]["min"]  # d(K/x) = K dx / x^2
    assert not stats_errors(taps["depth_m.float32_voxformer"], {**rec, "max_abs_diff_vs_other_dtype": depth_tol},
                            gap_factor=1.0)
