"""dalr.Stats and dalr.solve over the extension dalr._dalr (src/python/module.cpp)."""
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from . import _dalr

Error = _dalr.Error

_DTYPES = {"fp64": np.float64, "fp32": np.float32, "tf32": np.float32}


def methods():
    """The method names: dalr, dalr-exact, svd, svd-bc, prune-mean, prune-max."""
    return list(_dalr.method_names())


def cuda_available():
    """True when this package was built with CUDA and a device is present."""
    return bool(_dalr.cuda_built()) and _dalr.cuda_devices() > 0


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _check_precision(precision):
    if precision not in _DTYPES:
        raise Error(f"precision must be fp64, fp32 or tf32 for statistics (got '{precision}')")
    return precision


def _host_array(x, dtype, what, ndim):
    """x (NumPy, torch or a sequence) as a C-contiguous host array of `dtype`; ndim=None:
    any number of dimensions."""
    if _is_torch(x):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        x = x.numpy() if x.dtype not in _torch_16bit() else x.float().numpy()
    a = np.ascontiguousarray(x, dtype=dtype)
    if ndim is not None and a.ndim != ndim:
        raise Error(f"{what} must have {ndim} dimension(s), got shape {tuple(a.shape)}")
    return a


def _weight_matrix(weight, dtype):
    """A layer's weight as the (m, n) host matrix the engine takes, and the 4-D shape of a
    conv weight (c_out, c_in, kh, kw), seen as c_out x (c_in kh kw), or None."""
    w = _host_array(weight, dtype, "weight", None)
    if w.ndim == 4:
        return w.reshape(w.shape[0], -1), tuple(w.shape)
    if w.ndim != 2:
        raise Error(f"weight must have 2 dimensions (m, n) or 4 (c_out, c_in, kh, kw), got "
                    f"shape {tuple(w.shape)}")
    return w, None


def _torch_16bit():
    import torch
    return (torch.bfloat16, torch.float16)


class _Accumulated:
    """The properties of statistics held by the extension's object self._s."""

    @property
    def n(self):
        return self._s.n

    @property
    def count(self):
        """Samples added so far (rows of every batch, or patches of a conv layer's maps;
        merged statistics included)."""
        return self._s.count

    @property
    def precision(self):
        return self._s.precision

    @property
    def device(self):
        return self._s.device

    @property
    def dtype(self):
        return _DTYPES[self._s.precision]


class Stats(_Accumulated):
    """Streaming statistics of a layer's inputs x (n features): C = sum_j x_j x_j^T and
    the per-feature sums and maxima, in memory independent of the number of samples.

    ``Stats(n, precision="fp64", device="cpu")``; ``weight`` (m, n) and ``bias`` (m)
    also keep the statistics of the layer's relu outputs, which the pruning methods need.
    ``device`` is "cpu", "cuda" or "cuda:N" (the GPU accumulator; fp32 or tf32 suit it).
    """

    def __init__(self, n, precision="fp64", device="cpu", weight=None, bias=None, _impl=None):
        if _impl is not None:
            self._s = _impl
            return
        _check_precision(precision)
        if weight is None:
            if bias is not None:
                raise Error("Stats: bias given without weight")
            self._s = _dalr.Stats(int(n), precision, device)
        else:
            dt = _DTYPES[precision]
            w = _host_array(weight, dt, "weight (m, n)", 2)
            b = np.zeros(w.shape[0], dt) if bias is None else _host_array(bias, dt, "bias", 1)
            if w.shape[1] != n:
                raise Error(f"Stats: the weight takes {w.shape[1]} inputs, n is {n}")
            self._s = _dalr.Stats.with_layer(w, b, precision, device)


    def add(self, x):
        """Adds a batch of samples: x of shape (batch, n), NumPy or torch (any float
        dtype; converted to the statistics' precision). A CUDA tensor on the statistics'
        device is read in place through DLPack (on torch's current stream)."""
        if _is_torch(x) and x.device.type == "cuda" and self.device != "cpu":
            import torch
            t = x.detach()
            if t.dim() != 2:
                raise Error(f"activation batch must have 2 dimensions, got shape {tuple(t.shape)}")
            t = t.to(torch.float64 if self.dtype == np.float64 else torch.float32).contiguous()
            self._s.add_cuda(t, torch.cuda.current_stream(t.device).cuda_stream)
            return self
        a = _host_array(x, self.dtype, "activation batch", 2)
        self._s.add(a)
        return self

    def merge(self, other):
        """Adds another Stats' samples (same n, precision and output width)."""
        self._s.merge(other._s)
        return self

    def save(self, path, layer=None):
        """Writes the statistics in the format of the CLI's --save-stats (readable by
        ``dalr-gpu compress --stats``; ``layer`` names the layer they belong to)."""
        self._s.save(str(path), layer)

    @staticmethod
    def load(path, precision=None, device="cpu"):
        """Reads statistics written by save() or by the CLI's --save-stats."""
        if precision is not None:
            _check_precision(precision)
        return Stats(0, _impl=_dalr.Stats.load(str(path), precision or "", device))

    def __repr__(self):
        return (f"dalr.Stats(n={self.n}, count={self.count}, precision='{self.precision}', "
                f"device='{self.device}')")


@dataclass
class Factors:
    """A layer y = W x + b replaced by y ~= A (B x) + bias (A: m x k, B: k x n).
    Pruning methods: A is None, B = W[kept_units] and bias = b[kept_units]."""
    A: Any
    B: Any
    bias: Any
    kept_units: list = field(default_factory=list)
    spectrum: list = field(default_factory=list)
    report: dict = field(default_factory=dict)

    @property
    def rank(self):
        return self.report.get("rank")


def solve(weight, bias, stats, method="dalr", rank=None, keep=None, lam=None, lam_rel=1e-3,
          device="cpu", error=True):
    """Compresses one layer y = W x + b (weight (m, n), bias (m) or None) from its input
    statistics by `method` (see methods()), to `rank` or to the rank that keeps the
    fraction `keep` of the weights. `lam` is the absolute ridge; by default
    lam_rel * trace(C) / n, as the CLI. Returns Factors (NumPy arrays, or torch tensors
    on the weight's device when the weight was a tensor); `report` holds the CLI report's
    fields for the layer (lambda, energy kept, training error, timings).

    A conv layer: weight (c_out, c_in, kh, kw) and its dalr.ConvStats; the factors come
    back as conv weights, B (k, c_in, kh, kw) (the original stride, padding and dilation)
    and A (c_out, k, 1, 1), and the report adds the multiply-adds per output position
    (flops_per_position: c_out c_in kh kw before, k (c_in kh kw + c_out) after)."""
    if not isinstance(stats, Stats):
        raise Error("solve: stats must be a dalr.Stats")
    w, b, conv_shape, kernel = _layer_for(weight, bias, stats, "solve")
    r = _dalr.solve(stats._s, w, b, method, *_solve_args(rank, keep, lam, lam_rel, device, error),
                    bias is not None)
    return _factors(r, weight, w.shape, conv_shape, kernel)


def _layer_for(weight, bias, stats, what):
    """The weight (m, n) and bias as the engine takes them for `stats`, the 4-D shape of a
    conv weight (or None) and the statistics' kernel (a ConvStats', else None)."""
    dt = stats.dtype
    w, conv_shape = _weight_matrix(weight, dt)
    kernel = getattr(stats, "kernel_size", None)  # a ConvStats'
    if conv_shape is not None and kernel is not None \
            and conv_shape[1:] != (stats.channels, *kernel):
        raise Error(f"{what}: the conv weight's shape {conv_shape} does not match the "
                    f"statistics' {stats.channels} channels and {kernel[0]} x {kernel[1]} kernel")
    b = np.zeros(w.shape[0], dt) if bias is None else _host_array(bias, dt, "bias", 1)
    return w, b, conv_shape, kernel


def _solve_args(rank, keep, lam, lam_rel, device, error):
    return (None if rank is None else int(rank), None if keep is None else float(keep),
            None if lam is None else float(lam), float(lam_rel), device, bool(error))


def _factors(r, weight, shape, conv_shape, kernel):
    """The engine's result as Factors: conv-shaped for a conv layer, torch tensors on the
    weight's device when the weight was a tensor."""
    out = Factors(r["A"], r["B"], r["bias"], list(r["kept_units"]), list(r["spectrum"]),
                  dict(r["report"]))
    if conv_shape is not None or kernel is not None:
        _as_conv(out, shape, conv_shape)
    if _is_torch(weight):
        import torch
        conv = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(  # noqa: E731
            device=weight.device, dtype=weight.dtype)
        out.A, out.B, out.bias = conv(out.A), conv(out.B), conv(out.bias)
    return out


def _as_conv(f, shape, conv_shape):
    """A conv layer's factors: B as k filters of the original size, A as a 1x1 conv (when
    the weight was 4-D), and the multiply-adds per output position in the report."""
    m, n = shape
    k = f.B.shape[0]
    after = k * n if f.A is None else k * (n + m)  # pruning: the kept filters
    f.report["flops_per_position"] = {"before": m * n, "after": after,
                                      "kept_fraction": after / (m * n)}
    if conv_shape is not None:
        f.B = f.B.reshape(k, *conv_shape[1:])
        if f.A is not None:
            f.A = f.A.reshape(m, k, 1, 1)
