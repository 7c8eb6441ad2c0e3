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


# ------------------------------------------------------------------------------ the backend (VoxFormer's rules)
def test_canvas_rule():
    assert canvas_for((376, 1241)) == (384, 1248)  # SemanticKITTI 00-02, 13-21: top 8, right 7
    assert canvas_for((370, 1226)) == (384, 1248)  # 04-12: top 14, right 22
    assert canvas_for((376, 1408)) == (576, 1872)  # KITTI-360, as VoxFormer/CGFormer pad it
    assert canvas_for((188, 620)) == (192, 624)  # another camera: the next size the network takes
    assert canvas_for((376, 1241), "minimal") == (384, 1248) and canvas_for((96, 320), "kitti360") == (576, 1872)
    x = torch.ones(1, 3, 370, 1226)
    padded, top, right = pad_to_canvas(x, canvas_for((370, 1226)))
    assert (top, right) == (14, 22) and padded[..., :14, :].abs().sum() == 0 and padded[..., -22:].abs().sum() == 0
    assert torch.equal(crop_to_image(padded, top, (370, 1226)), x)
    with pytest.raises(ValueError, match="multiple of 16"):
        canvas_for((376, 1241), (380, 1248))
    with pytest.raises(ValueError, match="canvas must be"):
        canvas_for((376, 1241), "kitti")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("msnet") / "MSNet3D_rule.ckpt"
    _write_official(path, weight_rule_state_dict("msnet3d"))
    return path


def _uint8_pair(h=116, w=245):
    raw_l, raw_r = stereo_pair(h, w)
    to_u8 = lambda a: np.clip(np.round(a.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(raw_l), to_u8(raw_r)


def test_backend_feeds_the_network_voxformer_inputs_and_converts_with_0_54(weights_file):
    from l2cocc_ros.core.stereo import get_stereo_backend

    left, right = _uint8_pair()
    backend = get_stereo_backend("msnet3d", weights=str(weights_file))
    seen = []
    hooks = [backend.net.feature_extraction.register_forward_pre_hook(lambda _m, a: seen.append(a[0].clone())),
             backend.net.register_forward_hook(lambda _m, _a, out: seen.append(out.clone()))]
    fx = 718.856
    depth = backend.depth(left, right, fx, 0.5323)
    for hk in hooks:
        hk.remove()
    net_left, net_disp = seen[0], seen[-1]
    assert net_left.shape == (1, 3, 128, 256) and net_left.dtype == torch.float32
    assert net_left[..., :12, :].abs().sum() == 0 and net_left[..., -11:].abs().sum() == 0  # top / right, zeros
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expect = (torch.from_numpy(left).permute(2, 0, 1).float() / 255 - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(net_left[0, :, 12:, :245], expect, rtol=0, atol=1e-6)
    disp = net_disp[0, 12:, :245]  # cropped back
    assert (disp > 0).all()
    assert depth.shape == (116, 245) and depth.dtype == torch.float32
    torch.testing.assert_close(depth, torch.tensor(0.54 * fx, dtype=torch.float32) / disp, rtol=0, atol=0)
    calibrated = get_stereo_backend("msnet3d", weights=str(weights_file), baseline="calibrated")
    calibrated.disparity = lambda _l, _r: disp  # the conversion only
    torch.testing.assert_close(calibrated.depth(left, right, fx, 0.5323), depth * (0.5323 / 0.54), rtol=1e-6, atol=0)


def test_cost_volume_and_soft_argmin_stay_float32_under_autocast():
    model = MSNet3D().eval()
    model.load_state_dict(weight_rule_state_dict("msnet3d"))
    x = torch.randn(1, 3, 32, 64)
    taps = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        disp = model(x, x.flip(-1), taps=taps)
    assert taps["feature_extraction.left"].dtype == torch.bfloat16  # the convolutions follow the caller
    for name in ("cost_volume", "upsampled_logits", "softmax_prob", "disparity"):
        assert taps[name].dtype == torch.float32, name
    assert disp.dtype == torch.float32 and torch.isfinite(disp).all()


def test_missing_weights_say_which_file_and_where_it_comes_from(tmp_path):
    from l2cocc_ros.core.stereo import get_stereo_backend

    for weights in (None, "", str(tmp_path / "nope.ckpt")):
        with pytest.raises(FileNotFoundError) as exc:
            get_stereo_backend("msnet3d", weights=weights)
        text = str(exc.value)
        assert "MSNet3D_SF_DS_KITTI2015.ckpt" in text and "VoxFormer" in text and "CGFormer" in text
    assert "nope.ckpt" in text
    with pytest.raises(ValueError, match="baseline must be"):
        get_stereo_backend("msnet3d", weights="x", baseline="kitti")
    with pytest.raises(ValueError, match="bad options"):
        get_stereo_backend("msnet3d", weights="x", num_disparities=128)
