"""InferenceEngine on the tiny preset: labels equal the model's argmax for the same inputs, timings, checkpoints,
the LiDAR variant, and input refusals."""
import numpy as np
import pytest
import torch

from l2cocc_ros.core.engine import EngineResult, InferenceEngine, resolve_device
from l2cocc_ros.core.frame import LidarFrame, StereoFrame
from l2cocc_ros.core.preprocess import build_camera_inputs
from l2cocc_ros.core.stereo import SGBMStereo

H, W = 64, 200
FX, BASELINE, SHIFT = 180.0, 0.54, 12  # constant disparity 12 px -> depth 8.1 m
P2 = np.array([[FX, 0, W / 2, 0], [0, FX, H / 2, 0], [0, 0, 1, 0]])
P3 = P2.copy()
P3[0, 3] = -FX * BASELINE
T_GRID_FROM_CAM = np.array([[0, 0, 1, 0.3], [-1, 0, 0, 0.0], [0, -1, 0, 1.7], [0, 0, 0, 1]], dtype=np.float64)


def stereo_pair(seed=0):
    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 256, (H, W + SHIFT, 3), dtype=np.uint8)
    return np.ascontiguousarray(wide[:, :W]), np.ascontiguousarray(wide[:, SHIFT:])  # right sees it SHIFT px left


def stereo_frame(seed=0):
    return StereoFrame.from_projections(*stereo_pair(seed), P2, P3, T_GRID_FROM_CAM, stamp_ns=1)


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(2)
    return InferenceEngine.from_preset("tiny_l2cocc_c", device="cpu", seed=3,
                                       stereo_backend=SGBMStereo(num_disparities=32, block_size=5))


def spy_on(model):
    """Record the inputs and logits of the model's next forward (it still runs for real)."""
    seen = {}
    real = model.forward

    def forward(inputs):
        out = real(inputs)
        seen.update(inputs=dict(inputs), logits=out["logits"].detach().clone())
        return out

    model.forward = forward
    return seen


@pytest.fixture(scope="module")
def first(engine):
    left, right = stereo_pair()
    seen = spy_on(engine.model)
    try:
        res = engine.infer(StereoFrame.from_projections(left, right, P2, P3, T_GRID_FROM_CAM, stamp_ns=1))
    finally:
        del engine.model.forward
    res.seen = seen
    return res


def test_labels_equal_the_models_argmax_on_the_same_inputs(engine, first):
    left, right = stereo_pair()
    res = first
    assert isinstance(res, EngineResult)
    assert res.labels.shape == (256, 256, 32) and res.labels.dtype == np.uint8 and res.confidence is None
    assert set(res.timings_ms) == {"stereo", "preprocess", "model", "argmax", "total"}
    assert all(v >= 0 for v in res.timings_ms.values())
    # the same pipeline by hand: SGBM depth -> camera inputs -> model -> argmax
    depth = engine.stereo.compute(left, right, FX, BASELINE)
    valid = depth[:, 40:] > 0
    assert valid.mean() > 0.9 and np.median(depth[:, 40:][valid]) == pytest.approx(FX * BASELINE / SHIFT, rel=0.05)
    inputs, _ = build_camera_inputs(left, P2, engine.cfg.image_size, stereo_depth=depth, T_grid_from_cam=T_GRID_FROM_CAM)
    assert set(res.seen["inputs"]) == set(inputs)
    for key, value in inputs.items():  # the model saw exactly these tensors
        torch.testing.assert_close(res.seen["inputs"][key], value, rtol=0, atol=0)
    expected = res.seen["logits"][0].argmax(0).to(torch.uint8).numpy()
    np.testing.assert_array_equal(res.labels, expected)
    assert len(np.unique(expected)) > 1


def test_confidence_and_checkpoint_round_trip(engine, first, tmp_path):
    from l2cocc_ros.core.checkpoint import save_checkpoint
    from l2cocc_ros.core.config import get_preset

    path = tmp_path / "tiny.ckpt"
    save_checkpoint(path, engine.model, get_preset("tiny_l2cocc_c"))
    loaded = InferenceEngine.from_checkpoint(path, preset="tiny_l2cocc_c", device="cpu", with_confidence=True,
                                             stereo_backend=engine.stereo)
    b = loaded.infer(StereoFrame(*stereo_pair(), P2, BASELINE, T_GRID_FROM_CAM, 1))  # the baseline as given
    np.testing.assert_array_equal(first.labels, b.labels)
    assert b.confidence.shape == (256, 256, 32) and b.confidence.dtype == np.float32
    assert 1.0 / 20 - 1e-6 <= b.confidence.min() and b.confidence.max() <= 1.0
    with pytest.raises(ValueError, match="holds preset 'tiny_l2cocc_c'"):
        InferenceEngine.from_checkpoint(path, preset="tiny_l2cocc_d")
    # the authors' Lightning layout ({'state_dict': {'model.' + key: tensor}}) needs the preset to build the model
    released = tmp_path / "released.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in engine.model.state_dict().items()}}, released)
    other = InferenceEngine.from_checkpoint(released, preset="tiny_l2cocc_c")
    theirs, ours = other.model.state_dict(), engine.model.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    with pytest.raises(ValueError, match="without a config: give its preset"):
        InferenceEngine.from_checkpoint(released)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        InferenceEngine.from_checkpoint(tmp_path / "missing.ckpt")


def test_engine_takes_only_a_frame_of_its_kind(engine):
    with pytest.raises(TypeError, match="frame must be a StereoFrame or LidarFrame"):
        engine.infer(stereo_pair()[0])  # an image is not a frame
    with pytest.raises(ValueError, match="needs a StereoFrame, got a LidarFrame"):
        engine.infer(LidarFrame(np.zeros((3, 4), np.float32), 1))


def test_lidar_variant_uses_points():
    torch.set_num_threads(2)
    eng = InferenceEngine.from_preset("tiny_l2cocc_l", seed=1)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0, 50, 4000), rng.uniform(-25, 25, 4000), rng.uniform(-2, 4, 4000),
                           rng.uniform(0, 1, 4000)]).astype(np.float32)
    pts[:5] = np.nan  # non-finite points are dropped, not fatal
    seen = spy_on(eng.model)
    res = eng.infer(LidarFrame(pts, 1))
    np.testing.assert_array_equal(seen["inputs"]["points"].numpy(), pts[5:])  # finite points only
    np.testing.assert_array_equal(res.labels, seen["logits"][0].argmax(0).to(torch.uint8).numpy())
    del eng.model.forward
    # a stereo frame that carries the cloud gives the same grid
    with_cloud = StereoFrame.from_projections(*stereo_pair(), P2, P3, T_GRID_FROM_CAM, stamp_ns=1, points=pts)
    np.testing.assert_array_equal(eng.infer(with_cloud).labels, res.labels)
    with pytest.raises(ValueError, match="needs frame.points"):
        eng.infer(stereo_frame())


def test_device_and_precision_checks():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        InferenceEngine(torch.nn.Linear(1, 1), __import__("l2cocc_ros.core.config", fromlist=["x"]).get_preset(
            "tiny_l2cocc_c").model, precision="int4")


def test_fast_path_options_keep_the_labels():
    """channels_last (and the option plumbing) gives the same labels as the plain fp32 engine on CPU."""
    from l2cocc_ros.tools.bench import _synthetic_frame

    left, right, p2, p3, t, _ = _synthetic_frame(310, 94)
    frame = StereoFrame.from_projections(left, right, p2, p3, t, stamp_ns=1)
    ref = InferenceEngine.from_preset("tiny_l2cocc_c", seed=3).infer(frame).labels
    fast = InferenceEngine.from_preset("tiny_l2cocc_c", seed=3, channels_last=True)
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    got = fast.infer(frame).labels
    assert (got == ref).mean() > 0.99


def test_device_preprocessing_feeds_the_model_the_same_tensors(engine, first):
    """device_preprocess=True (torch resize on the engine's device) gives the model bit-identical inputs."""
    fast = InferenceEngine(engine.model, engine.cfg, stereo_backend=engine.stereo, device_preprocess=True)
    seen = spy_on(engine.model)
    try:
        res = fast.infer(stereo_frame())
    finally:
        del engine.model.forward
    assert set(seen["inputs"]) == set(first.seen["inputs"])
    for key, value in first.seen["inputs"].items():
        torch.testing.assert_close(seen["inputs"][key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(res.labels, first.labels)
    with pytest.raises(ValueError, match="device preprocessing supports resample"):
        InferenceEngine(engine.model, engine.cfg, device_preprocess=True, resample="nearest")


def test_confidence_is_the_softmax_probability_of_the_label(engine):
    seen = spy_on(engine.model)
    try:
        res = InferenceEngine(engine.model, engine.cfg, stereo_backend=engine.stereo, with_confidence=True).infer(
            stereo_frame(1))
    finally:
        del engine.model.forward
    prob = torch.softmax(seen["logits"][0], 0)
    np.testing.assert_array_equal(res.labels, prob.argmax(0).numpy())
    np.testing.assert_allclose(res.confidence, prob.max(0).values.numpy(), rtol=1e-5, atol=1e-6)


def _graph_recorder():
    """A dynamo backend that keeps each traced graph (and runs it as is)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend, graphs


def _symbolic_sizes(gm):
    """Tensors in a traced graph whose size is not a plain int (data-dependent: CUDA graphs cannot hold them)."""
    vals = [n.meta.get("example_value") for n in gm.graph.nodes]
    return [tuple(v.shape) for v in vals if isinstance(v, torch.Tensor) and not all(type(d) is int for d in v.shape)]


def test_static_shape_stages_trace_as_whole_graphs_and_keep_the_labels():
    """What cuda_graphs records: every static-shape stage traces as exactly one graph (fullgraph: a graph break
    raises) whose tensor sizes are all plain ints, and the labels do not change. Checked on CPU with a recording
    backend; on CUDA the same stages are compiled with mode="reduce-overhead"."""
    from l2cocc_ros.core.engine import capture_static_stages
    from l2cocc_ros.tools.bench import _synthetic_frame

    left, right, p2, p3, t, _ = _synthetic_frame(310, 94)
    frame = StereoFrame.from_projections(left, right, p2, p3, t, stamp_ns=1)
    ref = InferenceEngine.from_preset("tiny_l2cocc_c", seed=3).infer(frame).labels
    engine = InferenceEngine.from_preset("tiny_l2cocc_c", seed=3)
    backend, graphs = _graph_recorder()
    try:
        names = capture_static_stages(engine.model, backend=backend)
        assert names == ["img_backbone", "img_neck", "depth_net", "voxel_backbone", "voxel_neck", "tpv_generator",
                         "tpv_aggregator", "pts_bbox_head"]
        for _ in range(2):  # the second frame reuses the graphs
            got = engine.infer(frame).labels
            assert len(graphs) == len(names)
        np.testing.assert_array_equal(got, ref)
        assert all(not _symbolic_sizes(gm) for gm in graphs), [_symbolic_sizes(gm) for gm in graphs]
        assert set(engine.model.state_dict()) == set(InferenceEngine.from_preset("tiny_l2cocc_c").model.state_dict())

        class Dynamic(torch.nn.Module):  # the kind of block that stays eager (LSS, proposal, EVT)
            def forward(self, x):
                return x[x.nonzero(as_tuple=True)] * 2

        holder = torch.nn.Module()
        holder.block, holder.static_shape_stages = Dynamic(), ("block",)
        capture_static_stages(holder, backend=backend)
        holder.block(torch.tensor([0.0, 1.0, 2.0]))
        assert _symbolic_sizes(graphs[-1])  # the check above would catch it
        holder.static_shape_stages = ()
        with pytest.raises(ValueError, match="declares no static_shape_stages"):
            capture_static_stages(holder)
    finally:
        torch._dynamo.reset()


def test_cuda_graphs_option_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        InferenceEngine.from_preset("tiny_l2cocc_c", device="cpu", cuda_graphs=True)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="exclude each other"):
            InferenceEngine.from_preset("tiny_l2cocc_c", device="cuda", cuda_graphs=True, compile_model=True)
