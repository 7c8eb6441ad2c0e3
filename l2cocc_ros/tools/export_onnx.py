"""``l2cocc export-onnx``: the camera model (L2COcc-C / -D student) as a static-shape ONNX graph, checked with
onnxruntime against torch on the same inputs (the step towards TensorRT).

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)`` (the dynamo exporter needs the
``onnxscript`` package, which is not a dependency). Four aten ops of the model have no usable default ONNX
translation; while exporting, :func:`onnx_symbolics` maps them to standard ONNX ops:

* ``linalg_inv`` (camera matrices, 3x3 / 4x4; ONNX has no matrix inverse): closed-form adjugate / determinant
  built from Gather, Mul, Add, Sub, Div.
* ``index_add`` (the LSS splat; the default translation scatters without accumulation, so voxels hit by
  several frustum points keep one of them): ``ScatterND(reduction="add")`` (opset >= 16).
* ``batch_norm`` without running statistics (the TPV 2-D FPN keeps batch statistics at test time, as the
  original): with batch size 1 that is ``InstanceNormalization``; eval-mode BatchNorm -> ``BatchNormalization``
  (emitted without the default translation's shape checks, which fail after the Swin's dynamic padding).
* ``__iand_`` (``mask &= ...`` in the voxel proposal): ``And``.

Data-dependent selections (``nonzero`` in the LSS splat, the voxel proposal and the EVT query split) are exported
as ONNX NonZero / Gather / ScatterND: all graph inputs have static shapes, intermediate sizes depend on the
data. Python branches are frozen at trace time with the export inputs: (a) LSS depth chunks whose frustum
points all fall outside the grid are left out of the graph; which ones do depends only on the camera geometry,
so export with the calibration the graph will run with (``--calib``); (b) the rare fallbacks for a nearly empty
stereo depth (< 10 back-projected points: torch uses 10 random points; < 2 proposed voxels: torch proposes all)
are not in the graph, which then uses the few points / voxels there are.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from l2cocc_ros import exit_codes
from l2cocc_ros.core.config import ModelConfig, get_preset
from l2cocc_ros.core.preprocess import build_camera_inputs

__all__ = ["INPUT_NAMES", "KITTI_P2", "KITTI_TR", "CameraExportWrapper", "example_inputs", "onnx_symbolics",
           "export_camera_model", "check_onnx", "main"]

logger = logging.getLogger(__name__)

#: Graph input names, in the wrapper's positional order (docs/interfaces.md, model inputs).
INPUT_NAMES = ("img", "rot", "tran", "intrin", "post_rot", "post_tran", "bda", "stereo_depth")
#: KITTI odometry sequence 00: rectified left colour projection P2 (3x4) and velodyne -> cam0 ``Tr`` (3x4).
KITTI_P2 = np.array([[718.856, 0.0, 607.1928, 45.38225], [0.0, 718.856, 185.2157, -0.1130887],
                     [0.0, 0.0, 1.0, 0.003779761]])
KITTI_TR = np.array([[4.276802e-04, -9.999672e-01, -8.084491e-03, -1.198459e-02],
                     [-7.210626e-03, 8.081198e-03, -9.999413e-01, -5.403984e-02],
                     [9.999738e-01, 4.859485e-04, -7.206933e-03, -2.921968e-01]])
_OUTPUTS = ("logits", "labels")
_MIN_OPSET = 16  # ScatterND with reduction


class CameraExportWrapper(nn.Module):
    """Positional-tensor front of a camera segmentor for tracing.

    Args:
        model: a CameraSegmentor / DistillSegmentor (put in eval mode; the teacher is not exported).
        output: "logits" -> (1, n_cls, X, Y, Z) float32; "labels" -> (1, X, Y, Z) uint8 argmax.

    Raises:
        TypeError: ``model`` is not a camera segmentor.
        ValueError: unknown ``output``.
    """

    def __init__(self, model: nn.Module, output: str = "logits") -> None:
        super().__init__()
        from l2cocc_ros.core.model.l2cocc import CameraSegmentor

        if not isinstance(model, CameraSegmentor):
            raise TypeError(f"only camera models (variants c, d) export to ONNX, got {type(model).__name__}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        self.model = model.eval()
        self.output = output

    def forward(self, img: Tensor, rot: Tensor, tran: Tensor, intrin: Tensor, post_rot: Tensor,
                post_tran: Tensor, bda: Tensor, stereo_depth: Tensor) -> Tensor:
        inputs = dict(zip(INPUT_NAMES, (img, rot, tran, intrin, post_rot, post_tran, bda, stereo_depth)))
        logits = self.model(inputs)["logits"]
        if self.output == "labels":
            return logits.argmax(dim=1).to(torch.uint8)
        return logits


def example_inputs(cfg: ModelConfig, *, P2: Optional[np.ndarray] = None, T_velo_to_cam: Optional[np.ndarray] = None,
                   orig_hw: Sequence[int] = (376, 1241), seed: int = 0) -> Dict[str, Tensor]:
    """Random but realistic model inputs: a smooth textured frame and a ground-plane + wall stereo depth.

    The image is low-frequency noise over a sky-to-road gradient; the depth map is the road plane seen from
    1.73 m (KITTI's camera height) below the horizon, a facade at 20 m above it and 0 (invalid) in the top
    rows, so the voxel proposal and the EVT see a plausible number of occupied voxels.

    Args:
        cfg: model config (gives the network image size).
        P2: left projection 3x4 (default KITTI seq 00).
        T_velo_to_cam: ``Tr`` 3x4/4x4 (default KITTI seq 00).
        orig_hw: camera image size before the resize/crop.
        seed: RNG seed.

    Returns:
        The inputs dict of docs/interfaces.md (camera keys + ``stereo_depth``).
    """
    h, w = (int(v) for v in orig_hw)
    p2 = KITTI_P2 if P2 is None else np.asarray(P2, dtype=np.float64)
    tr = KITTI_TR if T_velo_to_cam is None else np.asarray(T_velo_to_cam, dtype=np.float64)
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3))
    tex = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
    ramp = np.linspace(200.0, 60.0, h)[:, None, None]
    rgb = np.clip(0.5 * tex + 0.5 * ramp, 0, 255).astype(np.uint8)
    fy, cy = float(p2[1, 1]), float(p2[1, 2]) * h / 376.0
    rows = np.arange(h, dtype=np.float64)[:, None] - cy
    depth = np.where(rows > 1.0, fy * 1.73 / np.maximum(rows, 1.0), 20.0)
    depth = np.where(np.arange(h)[:, None] < h // 6, 0.0, depth)
    depth = np.clip(depth * (1.0 + 0.02 * rng.standard_normal((h, w))), 0.0, 80.0).astype(np.float32)
    inputs, _ = build_camera_inputs(rgb, p2, cfg.image_size, stereo_depth=depth, T_velo_to_cam=tr)
    return inputs


# ------------------------------------------------------------------------------------------ symbolics
def _perm_sign(perm: Sequence[int]) -> int:
    inversions = sum(1 for i, j in itertools.combinations(range(len(perm)), 2) if perm[i] > perm[j])
    return -1 if inversions % 2 else 1


def _inverse_symbolic(g, x):
    """Closed-form inverse (adjugate / determinant) of (..., n, n) matrices, n <= 4, in plain ONNX ops."""
    from torch.onnx import symbolic_helper as sh

    sizes = sh._get_tensor_sizes(x)
    n = sizes[-1] if sizes else None
    if n is None or n > 4 or sizes[-2] != n:
        raise RuntimeError(f"ONNX export: matrix inverse needs a static (..., n, n) shape with n <= 4, got {sizes}")
    const = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))  # noqa: E731
    rows = [g.op("Gather", x, const(i), axis_i=-2) for i in range(n)]
    e = [[g.op("Gather", rows[i], const(j), axis_i=-1) for j in range(n)] for i in range(n)]

    def det(rs: List[int], cs: List[int]):
        if not rs:
            return None
        acc = None
        for perm in itertools.permutations(range(len(cs))):
            term = None
            for r, k in zip(rs, perm):
                term = e[r][cs[k]] if term is None else g.op("Mul", term, e[r][cs[k]])
            pos = _perm_sign(perm) > 0
            acc = (term if pos else g.op("Neg", term)) if acc is None else g.op("Add" if pos else "Sub", acc, term)
        return acc

    cof = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            minor = det([r for r in range(n) if r != i], [c for c in range(n) if c != j])
            if minor is None:  # 1x1
                minor = g.op("Constant", value_t=torch.tensor(1.0))
            cof[i][j] = minor if (i + j) % 2 == 0 else g.op("Neg", minor)
    d = None
    for j in range(n):
        t = g.op("Mul", e[0][j], cof[0][j])
        d = t if d is None else g.op("Add", d, t)
    out_rows = []
    for i in range(n):  # inverse[i][j] = cofactor[j][i] / det
        entries = [g.op("Unsqueeze", g.op("Div", cof[j][i], d), const([-1])) for j in range(n)]
        out_rows.append(g.op("Unsqueeze", g.op("Concat", *entries, axis_i=-1), const([-2])))
    return g.op("Concat", *out_rows, axis_i=-2)


def _index_add_symbolic(g, x, dim, index, src, alpha=None):
    from torch.onnx import symbolic_helper as sh

    if sh._maybe_get_const(dim, "i") != 0:
        raise RuntimeError("ONNX export: index_add is translated for dim 0 only")
    if alpha is not None and not sh._is_none(alpha) and sh._maybe_get_const(alpha, "f") != 1:
        raise RuntimeError("ONNX export: index_add with alpha != 1")
    idx = g.op("Unsqueeze", index, g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64)))
    return g.op("ScatterND", x, idx, src, reduction_s="add")


def _batch_norm_symbolic(g, x, weight, bias, mean, var, training, momentum, eps, cudnn_enabled):
    from torch.onnx import symbolic_helper as sh

    eps = float(sh._maybe_get_const(eps, "f"))
    if sh._is_none(weight) or sh._is_none(bias):
        raise RuntimeError("ONNX export: BatchNorm without affine parameters is not translated")
    if sh._is_none(mean) or sh._is_none(var):  # batch statistics at test time; batch size 1 -> instance norm
        return g.op("InstanceNormalization", x, weight, bias, epsilon_f=eps)
    if sh._maybe_get_const(training, "b"):
        raise RuntimeError("ONNX export: BatchNorm in training mode; export an eval() model")
    return g.op("BatchNormalization", x, weight, bias, mean, var, epsilon_f=eps,
                momentum_f=1.0 - float(sh._maybe_get_const(momentum, "f")))


def _iand_symbolic(g, x, y):
    return g.op("And", x, y)


_SYMBOLICS = {"aten::linalg_inv": _inverse_symbolic, "aten::index_add": _index_add_symbolic,
              "aten::batch_norm": _batch_norm_symbolic, "aten::__iand_": _iand_symbolic}


@contextlib.contextmanager
def onnx_symbolics(opset: int) -> Iterator[None]:
    """Register the project's ONNX translations (module docstring) for the duration of an export."""
    for name, fn in _SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


# ------------------------------------------------------------------------------------------ export
def _ordered(inputs: Mapping[str, Tensor]) -> Tuple[Tensor, ...]:
    missing = [k for k in INPUT_NAMES if k not in inputs]
    if missing:
        raise ValueError(f"inputs lack {', '.join(missing)}")
    return tuple(inputs[k].detach().cpu().float().contiguous() for k in INPUT_NAMES)


def export_camera_model(model: nn.Module, inputs: Mapping[str, Tensor], path, *, output: str = "logits",
                        opset: int = 17, metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Trace a camera model on ``inputs`` (CPU, fp32) and write a static-shape ONNX file.

    Args:
        model: CameraSegmentor / DistillSegmentor with its weights.
        inputs: model inputs (see :func:`example_inputs`); their shapes become the graph's input shapes.
        path: output ``.onnx`` file (parent folders are created).
        output: "logits" or "labels" (see :class:`CameraExportWrapper`).
        opset: ONNX opset (>= 16).
        metadata: extra ``metadata_props`` of the model (e.g. the preset and the calibration it was traced with).

    Returns:
        The written path (checked with ``onnx.checker``).

    Raises:
        ValueError: bad opset or missing inputs; TypeError: not a camera model.
    """
    import onnx

    if int(opset) < _MIN_OPSET:
        raise ValueError(f"opset must be >= {_MIN_OPSET} (ScatterND with reduction), got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = CameraExportWrapper(model.cpu().float(), output)
    args = _ordered(inputs)
    t0 = time.perf_counter()
    with onnx_symbolics(int(opset)), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings of the frozen shape checks (module docstring)
        torch.onnx.export(wrapper, args, str(path), input_names=list(INPUT_NAMES), output_names=[output],
                          opset_version=int(opset), dynamo=False, do_constant_folding=True)
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    logger.info("exported %s in %.1f s (%.1f MB)", path, time.perf_counter() - t0, path.stat().st_size / 2**20)
    return path


def check_onnx(path, model: nn.Module, inputs: Mapping[str, Tensor], *, output: str = "logits",
               runs: int = 1) -> Dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and torch on the same inputs and compare.

    Args:
        path: ONNX file from :func:`export_camera_model`.
        model: the torch model it came from.
        inputs: model inputs (same shapes as at export).
        output: what the graph returns, "logits" or "labels".
        runs: timed repetitions of each (median reported).

    Returns:
        ``argmax_agreement_pct`` (% of voxels with the same label), for logits also ``max_abs_diff`` and
        ``mean_abs_diff``, plus ``torch_ms`` / ``onnxruntime_ms`` (median) and ``onnx_nodes``.

    Raises:
        FileNotFoundError: no such file.
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    args = _ordered(inputs)
    wrapper = CameraExportWrapper(model.cpu().float(), "logits")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: a.numpy() for name, a in zip(INPUT_NAMES, args)}
    torch_ms, ort_ms = [], []
    for _ in range(max(1, int(runs))):
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = wrapper(*args).numpy()
        torch_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        got = session.run(None, feed)[0]
        ort_ms.append((time.perf_counter() - t0) * 1e3)
    ref_labels = ref.argmax(axis=1)
    out = {"torch_ms": float(np.median(torch_ms)), "onnxruntime_ms": float(np.median(ort_ms)),
           "onnx_nodes": float(len(onnx.load(str(path), load_external_data=False).graph.node))}
    if output == "labels":
        if got.shape != ref_labels.shape:
            raise ValueError(f"ONNX labels have shape {got.shape}, expected {ref_labels.shape}")
        out["argmax_agreement_pct"] = float(100.0 * (got.astype(np.int64) == ref_labels).mean())
        return out
    if got.shape != ref.shape:
        raise ValueError(f"ONNX logits have shape {got.shape}, expected {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref)
    out.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
               argmax_agreement_pct=float(100.0 * (got.argmax(axis=1) == ref_labels).mean()))
    return out


# ------------------------------------------------------------------------------------------ CLI
def _load_model(preset: Optional[str], checkpoint: Optional[Path]) -> Tuple[nn.Module, ModelConfig]:
    from l2cocc_ros.core.model.l2cocc import build_model

    if checkpoint is None:
        if preset is None:
            raise ValueError("give --config PRESET and/or --checkpoint CKPT")
        cfg = get_preset(preset).model
        torch.manual_seed(0)
        model = build_model(cfg)
    else:
        from l2cocc_ros.core.checkpoint import load_model

        model, exp = load_model(checkpoint, preset)
        cfg = exp.model
    if cfg.variant not in ("c", "d"):
        raise ValueError(f"only camera variants (c, d) export to ONNX; {cfg.name} is variant {cfg.variant!r}")
    return model.eval(), cfg


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc export-onnx", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="model preset, e.g. semantickitti_l2cocc_c (random weights without "
                        "--checkpoint)")
    parser.add_argument("--checkpoint", type=Path, help="one of our checkpoints (l2cocc train)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx file")
    parser.add_argument("--output", choices=_OUTPUTS, default="logits", help="graph output")
    parser.add_argument("--opset", type=int, default=17, help=f"ONNX opset (>= {_MIN_OPSET})")
    parser.add_argument("--calib", type=Path, help="KITTI calib.txt (P2, Tr) the graph will run with; default "
                        "KITTI sequence 00")
    parser.add_argument("--image-size", type=int, nargs=2, default=(376, 1241), metavar=("H", "W"),
                        help="camera image size before the resize/crop")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with torch on the export inputs")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of the check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model, cfg = _load_model(args.config, args.checkpoint)
        p2 = tr = None
        if args.calib is not None:
            from l2cocc_ros.core.data.kitti_io import read_calib

            calib = read_calib(args.calib, required=("P2", "Tr"))
            p2, tr = calib["P2"][:3], calib["Tr"]
        inputs = example_inputs(cfg, P2=p2, T_velo_to_cam=tr, orig_hw=args.image_size)
        meta = {"l2cocc_model": cfg.name, "l2cocc_output": args.output,
                "l2cocc_image_size": str(list(args.image_size)),
                "l2cocc_P2": str((KITTI_P2 if p2 is None else p2).tolist()),
                "l2cocc_Tr": str((KITTI_TR if tr is None else tr[:3]).tolist()),
                "l2cocc_checkpoint": str(args.checkpoint or "random weights (seed 0)")}
        path = export_camera_model(model, inputs, args.out, output=args.output, opset=args.opset, metadata=meta)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB, {cfg.name}, output {args.output}, "
              f"inputs {', '.join(f'{k} {tuple(inputs[k].shape)}' for k in INPUT_NAMES)})")
        if args.check:
            res = check_onnx(path, model, inputs, output=args.output, runs=args.runs)
            print("check (onnxruntime CPU vs torch): " + ", ".join(f"{k} {v:.6g}" for k, v in res.items()))
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"l2cocc export-onnx: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
