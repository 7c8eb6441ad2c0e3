"""CUDA semantics on a CPU-only machine, for tests: tensors that say they live on ``cuda:0``.

A :class:`CudaTensor` is a wrapper whose device reads ``cuda:0`` and whose data is a CPU tensor. Inside
:func:`cuda_proxy` every aten op on such tensors is run on the CPU data by :class:`CudaProxy` (a
``TorchDispatchMode``), which checks what a GPU would check and records what a GPU would pay for:

* ``torch.autocast("cuda")`` dispatches on the device, so the real AutocastCUDA kernels of this torch build pick
  each op's dtype (matmul / conv -> fp16 or bf16, softmax / norms -> fp32), exactly as on a GPU;
* convolutions and matmuls with low-precision inputs run in fp32 and round their output to the low dtype (tensor
  cores accumulate in fp32); other ops run in their dtype on the CPU (same IEEE rounding, no fused kernels);
* ``mismatches``: ops mixing a CUDA tensor with a non-scalar CPU tensor ("Expected all tensors to be on the
  same device"); CPU index tensors are allowed where CUDA allows them;
* ``syncs``: host-device synchronisations (``item``/``int``/``bool`` of a tensor, ``nonzero``, ``unique``,
  boolean-mask indexing, ``torch.inverse``'s error check, device-to-host copies), by ``file:line``;
* ``nonfinite``: ops that produced inf/nan from finite inputs (fp16 overflow), by ``file:line``.

Limits: no cuDNN / cuBLAS algorithm choice, no TF32, no timing, inference only (autograd off inside). What a
GPU does differently from a CPU in precision and device rules is caught; speed is not.
"""
from __future__ import annotations

import contextlib
import os
import traceback
from collections import Counter
from typing import Iterator, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["CudaTensor", "CudaProxy", "cuda_proxy", "OnDevice", "device_mixing"]

CUDA = torch.device("cuda", 0)
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOW = (torch.float16, torch.bfloat16)
#: ops that tensor cores run with fp32 accumulation
TENSOR_CORE_OPS = {"convolution", "_convolution", "mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot",
                   "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention"}
#: ops after which the host waits for the device
SYNC_OPS = {"_local_scalar_dense", "is_nonzero", "nonzero", "_unique", "_unique2", "unique_dim",
            "unique_consecutive", "masked_select", "_linalg_check_errors", "equal"}
#: ops that may take CPU operands next to CUDA ones (copies) or CPU index tensors (checked separately)
TRANSFER_OPS = {"_to_copy", "copy_", "_copy_from", "lift_fresh", "lift_fresh_copy"}
INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _site() -> str:
    """The innermost stack frame inside the repository (not torch, not this file): ``path:line``."""
    here = os.path.abspath(__file__)
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if path.startswith(PACKAGE) and path != here and "site-packages" not in path:
            return f"{os.path.relpath(path, PACKAGE)}:{frame.lineno}"
    return "?"


def _wrapper_subclass(cls, elem: torch.Tensor, device, requires_grad: bool = False) -> torch.Tensor:
    """A ``cls`` wrapper subclass that reports ``device`` and keeps the real data as ``.elem``."""
    out = torch.Tensor._make_wrapper_subclass(cls, elem.size(), strides=elem.stride(),
                                              storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                              device=device, layout=elem.layout, requires_grad=requires_grad)
    out.elem = elem
    return out


class CudaTensor(torch.Tensor):
    """A tensor whose device is ``cuda:0``; its data is the CPU tensor ``elem``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> "CudaTensor":
        return _wrapper_subclass(cls, elem, CUDA)

    def __repr__(self) -> str:
        return f"CudaTensor({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on a CudaTensor outside cuda_proxy()")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        special = _PYTHON_LEVEL.get(getattr(func, "__name__", ""))
        if special is not None:  # Python bindings that need a real CUDA device guard: route through aten
            return special(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _unwrap(x):
    return x.elem if isinstance(x, CudaTensor) else x


def _wrap(x):
    return CudaTensor(x) if isinstance(x, torch.Tensor) and not isinstance(x, CudaTensor) else x


def _getitem(self, index):
    proxy = _ACTIVE[-1]
    proxy.note_index(index)
    with proxy.passthrough():
        out = _unwrap(self)[tree_map(_unwrap, index)]
    return _wrap(out) if isinstance(self, CudaTensor) else out


def _setitem(self, index, value):
    proxy = _ACTIVE[-1]
    proxy.note_index(index, value)
    if isinstance(value, torch.Tensor) and not isinstance(value, CudaTensor) and value.dim() > 0:
        proxy.mismatches[("setitem (CPU value)", _site())] += 1
    with proxy.passthrough():
        _unwrap(self)[tree_map(_unwrap, index)] = _unwrap(value)


def _scalar(kind):
    return lambda self: kind(torch.ops.aten._local_scalar_dense.default(self))


def _nonzero(self, *, as_tuple=False):
    idx = torch.ops.aten.nonzero.default(self)
    return tuple(idx.unbind(1)) if as_tuple else idx


def _contiguous(self, memory_format=torch.contiguous_format):
    with torch._C.DisableTorchFunctionSubclass():
        if self.is_contiguous(memory_format=memory_format):
            return self
    return torch.ops.aten.clone.default(self, memory_format=memory_format)


_PYTHON_LEVEL = {
    "__getitem__": _getitem, "__setitem__": _setitem,
    "__invert__": lambda self: torch.ops.aten.bitwise_not.default(self),
    "__int__": _scalar(int), "__index__": _scalar(int), "__float__": _scalar(float), "__bool__": _scalar(bool),
    "item": lambda self: torch.ops.aten._local_scalar_dense.default(self),
    "tolist": lambda self: _unwrap(torch.ops.aten._to_copy.default(self, device=torch.device("cpu"))).tolist(),
    "nonzero": _nonzero, "contiguous": _contiguous,
    "new_tensor": lambda self, data, dtype=None, **_: torch.ops.aten._to_copy.default(
        torch.as_tensor(data, dtype=dtype or self.dtype), device=self.device),
}
_ACTIVE: List["CudaProxy"] = []


class CudaProxy(TorchDispatchMode):
    """Runs ops on :class:`CudaTensor` on the CPU and records ``mismatches``, ``syncs`` and ``nonfinite``."""

    def __init__(self) -> None:
        super().__init__()
        self.mismatches: Counter = Counter()  # (op, site) -> count
        self.syncs: Counter = Counter()  # (what, site) -> count
        self.nonfinite: List[Tuple[str, str, str]] = []  # (op, site, dtype), first occurrence per site
        self._passthrough = 0

    def __enter__(self):
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE.pop()
        return super().__exit__(*exc)

    @contextlib.contextmanager
    def passthrough(self) -> Iterator[None]:
        """Plain CPU execution for work done on behalf of one proxied call."""
        self._passthrough += 1
        try:
            yield
        finally:
            self._passthrough -= 1

    def note_index(self, index, value=None) -> None:
        """A boolean mask in an index needs its nonzero count on the host (not ``x[mask] = scalar``)."""
        items = index if isinstance(index, (tuple, list)) else (index,)
        masked = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0 for i in items)
        if masked and (value is None or (isinstance(value, torch.Tensor) and value.numel() > 1)):
            self.syncs[("boolean-mask index", _site())] += 1

    def report(self) -> str:
        """Everything recorded, one line per site."""
        lines = [f"mismatch x{n}: {op} at {site}" for (op, site), n in self.mismatches.items()]
        lines += [f"non-finite from finite inputs: {op} ({dt}) at {site}" for op, site, dt in self.nonfinite]
        lines += [f"sync x{n}: {what} at {site}" for (what, site), n in self.syncs.most_common()]
        return "\n".join(lines) or "nothing recorded"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._passthrough:
            return func(*args, **kwargs)
        name = func._overloadpacket.__name__
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_cuda = any(isinstance(t, CudaTensor) for t in tensors)
        device = kwargs.get("device")
        to_cuda = torch.device(device).type == "cuda" if device is not None else on_cuda
        if name == "_to_copy" and isinstance(args[0], CudaTensor) and not to_cuda:
            self.syncs[("device-to-host copy", _site())] += 1
        if name == "copy_" and isinstance(args[1], CudaTensor) and not isinstance(args[0], CudaTensor):
            self.syncs[("device-to-host copy", _site())] += 1
        if on_cuda and name in SYNC_OPS:
            self.syncs[(name, _site())] += 1
        if on_cuda and name in INDEX_OPS and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])):
            self.syncs[("boolean-mask index", _site())] += 1
        if on_cuda and name not in TRANSFER_OPS:
            indices = [i for i in (args[1] or []) if i is not None] if name in INDEX_OPS else []
            cpu = [t for t in tensors if not isinstance(t, CudaTensor) and t.dim() > 0
                   and not any(t is i for i in indices)]
            if cpu:
                self.mismatches[(str(func), _site())] += 1
        out = self._run(func, name, args, kwargs)
        if name == "copy_":
            return args[0]
        schema = func._schema  # in-place ops return their (wrapped) argument
        if len(schema.returns) == 1 and schema.returns[0].alias_info is not None \
                and schema.returns[0].alias_info.is_write:
            self._check_finite(name, [args[0]], tensors)
            return args[0]
        out = tree_map(_wrap, out) if to_cuda else out
        self._check_finite(name, tree_flatten(out)[0], tensors)
        return out

    def _run(self, func, name, args, kwargs):
        cpu_args, cpu_kwargs = tree_map(_unwrap, args), tree_map(_unwrap, kwargs)
        if cpu_kwargs.get("device") is not None and torch.device(cpu_kwargs["device"]).type == "cuda":
            cpu_kwargs["device"] = torch.device("cpu")
        if name == "copy_":
            return cpu_args[0].copy_(*cpu_args[1:], **cpu_kwargs)
        low = [t.dtype for t in tree_flatten((cpu_args, cpu_kwargs))[0]
               if isinstance(t, torch.Tensor) and t.dtype in LOW]
        if name in ("_softmax", "_log_softmax") and cpu_args[2]:  # CUDA's fused half -> float softmax
            return func(cpu_args[0].float(), cpu_args[1], False)
        if low and name in TENSOR_CORE_OPS:
            return self._in_fp32(func, cpu_args, cpu_kwargs, low[0])
        try:
            return func(*cpu_args, **cpu_kwargs)
        except (RuntimeError, NotImplementedError) as exc:  # a CPU kernel without fp16 / bf16: emulate in fp32
            if not low or not ("Half" in str(exc) or "BFloat16" in str(exc)):
                raise
            return self._in_fp32(func, cpu_args, cpu_kwargs, low[0])

    @staticmethod
    def _in_fp32(func, args, kwargs, low):
        up = lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype in LOW else t  # noqa: E731
        out = func(*tree_map(up, args), **tree_map(up, kwargs))
        return tree_map(lambda t: t.to(low) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)

    def _check_finite(self, name, outs, ins) -> None:
        if name.startswith(("empty", "new_empty")):  # uninitialised memory
            return
        def finite(ts):
            return all(bool(torch.isfinite(_unwrap(t)).all()) for t in ts
                       if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel())

        with self.passthrough():
            if finite(outs) or not finite(ins):
                return
        site = _site()
        if all(s != site or o != name for o, s, _ in self.nonfinite):
            dtype = next(str(t.dtype) for t in outs if isinstance(t, torch.Tensor) and t.is_floating_point())
            self.nonfinite.append((name, site, dtype))


@contextlib.contextmanager
def cuda_proxy() -> Iterator[CudaProxy]:
    """Pretend CUDA is available and run CUDA tensors through a :class:`CudaProxy` (yielded).

    ``torch.cuda.is_available()`` is True, ``x.to("cuda")`` / ``module.to("cuda")`` / ``torch.tensor(...,
    device="cuda")`` make :class:`CudaTensor`, ``torch.cuda.synchronize`` does nothing; autograd is off.
    """
    saved_cuda = {k: getattr(torch.cuda, k) for k in ("is_available", "is_bf16_supported", "synchronize",
                                                      "current_device", "device_count", "_lazy_init")}
    real_to, real_tensor, real_cuda = torch.Tensor.to, torch.tensor, torch.Tensor.cuda

    def to(self, *args, **kwargs):
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        if not ((device is not None and device.type == "cuda") or (device is None and isinstance(self, CudaTensor))):
            return real_to(self, *args, **kwargs)
        if isinstance(self, CudaTensor) and dtype in (None, self.dtype) and memory_format in (
                None, torch.preserve_format) and not kwargs.get("copy", False):
            return self
        return torch.ops.aten._to_copy.default(self, dtype=dtype or self.dtype, device=CUDA,
                                               memory_format=memory_format or torch.preserve_format)

    def tensor(data, *args, device=None, **kwargs):
        if device is not None and torch.device(device).type == "cuda":
            return torch.ops.aten._to_copy.default(real_tensor(data, *args, **kwargs), device=CUDA)
        return real_tensor(data, *args, device=device, **kwargs)

    torch.cuda.is_available = lambda: True
    torch.cuda.is_bf16_supported = lambda *a, **k: True
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_device = lambda: 0
    torch.cuda.device_count = lambda: 1
    torch.cuda._lazy_init = lambda: None
    torch.Tensor.to, torch.tensor = to, tensor
    torch.Tensor.cuda = lambda self, *a, **k: to(self, CUDA)
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # module.to: new Parameters wrap the data
    cache = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    proxy = CudaProxy()
    try:
        with torch.no_grad(), proxy:
            yield proxy
    finally:
        for k, v in saved_cuda.items():
            setattr(torch.cuda, k, v)
        torch.Tensor.to, torch.tensor = real_to, real_tensor
        torch.Tensor.cuda = real_cuda
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        torch.set_autocast_cache_enabled(cache)


# ------------------------------------------------------------------------------ training: device mixing with autograd
class OnDevice(torch.Tensor):
    """Real CPU data behind the ``meta`` device, standing in for the GPU in training checks.

    Unlike :class:`CudaTensor` it supports autograd (the meta device has a device guard in every torch build), and
    unlike plain meta tensors it holds data, so ``item()``, ``nonzero`` and boolean masks run. Ops mixing it
    with a non-scalar CPU tensor are recorded in the active :func:`device_mixing` counter.
    """

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, requires_grad: bool = False) -> "OnDevice":
        return _wrapper_subclass(cls, elem, "meta", requires_grad)

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "tolist":  # refused for subclasses by the binding
            return args[0].elem.tolist()
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # backward runs here (engine threads)
        return _device_op(func, args, kwargs or {})


_MIXING: List[Counter] = []


def _device_op(func, args, kwargs):
    name = func._overloadpacket.__name__
    flat = tree_flatten((args, kwargs))[0]
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    device = kwargs.get("device")
    to_device = torch.device(device).type == "meta" if device is not None else any(
        isinstance(t, OnDevice) for t in tensors)
    if any(t.device.type == "meta" and not isinstance(t, OnDevice) for t in tensors):
        raise RuntimeError(f"{func}: a meta tensor without data (created outside device_mixing?)")
    if any(isinstance(t, OnDevice) for t in tensors) and name not in TRANSFER_OPS:
        indices = [i for i in (args[1] or []) if i is not None] if name in INDEX_OPS else []
        if any(not isinstance(t, OnDevice) and t.dim() > 0 and not any(t is i for i in indices) for t in tensors):
            for counter in _MIXING:
                counter[(str(func), _site())] += 1
    unwrap = lambda t: t.elem if isinstance(t, OnDevice) else t  # noqa: E731
    cpu_args, cpu_kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
    if device is not None and torch.device(device).type == "meta":
        cpu_kwargs["device"] = torch.device("cpu")
    out = func(*cpu_args, **cpu_kwargs)
    schema = func._schema
    if len(schema.returns) == 1 and schema.returns[0].alias_info is not None and schema.returns[0].alias_info.is_write:
        return args[0]
    if not to_device:
        return out
    return tree_map(lambda t: OnDevice(t) if isinstance(t, torch.Tensor) and not isinstance(t, OnDevice) else t, out)


class _DeviceMixingMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = tree_flatten((args, kwargs))[0]
        device = kwargs.get("device")
        if any(isinstance(t, OnDevice) for t in flat) or (device is not None and torch.device(device).type == "meta"):
            return _device_op(func, args, kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def device_mixing() -> Iterator[Counter]:
    """``x.to("meta")`` makes an :class:`OnDevice` tensor; yields the Counter of (op, site) device mixes."""
    counter: Counter = Counter()
    _MIXING.append(counter)
    try:
        with _DeviceMixingMode():
            yield counter
    finally:
        _MIXING.remove(counter)
