"""The asymmetric fit of sequential compression (Zhang et al., "Accelerating very deep
convolutional networks", 2015; the CLI's --sequential asymmetric): dalr.CrossStats and
dalr.asymmetric_solve."""
import numpy as np

from . import _dalr
from ._api import Error, Stats, _Accumulated, _check_precision, _factors, _host_array, \
    _layer_for, _solve_args


class CrossStats(_Accumulated):
    """The cross statistics K = sum_j x_j xh_j^T (n x n) of one layer's inputs in two
    networks: x in the original network, xh (x-hat) in the one whose earlier layers are
    already compressed, the same samples in the same order.

    ``CrossStats(n, precision="fp64", device="cpu")`` for rows of n features;
    ``CrossStats.like(stats)`` for the width, precision, device and, for a dalr.ConvStats,
    the conv geometry (patches cut as that ConvStats cuts them) of given statistics.
    add(x, xh) takes pairs of batches of the same shape: (batch, n) rows, or (images, C, H, W)
    feature maps for a conv layer. NumPy or torch (CUDA tensors are copied to the host:
    the cross accumulator runs on the CPU).
    """

    def __init__(self, n, precision="fp64", device="cpu"):
        _check_precision(precision)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise Error(f"CrossStats: n must be an int >= 1, got {n!r}")
        self._s = _dalr.CrossStats(int(n), precision, device)
        self._geometry = None
        self._prepad = None

    @staticmethod
    def like(stats):
        """Empty cross statistics matching `stats` (a dalr.Stats or dalr.ConvStats)."""
        if not isinstance(stats, Stats):
            raise Error("CrossStats.like: stats must be a dalr.Stats or dalr.ConvStats")
        out = CrossStats(stats.n, stats.precision, stats.device)
        geometry = getattr(stats, "_geometry", None)
        if geometry is not None:
            channels, (kh, kw), s, pads, d = geometry
            out._geometry = geometry
            out._prepad = stats._prepad
            out._s.set_conv(channels, kh, kw, s, pads[0] if out._prepad is None else 0, d)
        return out

    @property
    def images(self):
        """Feature-map pairs added so far (a conv layer's)."""
        return self._s.images

    def add(self, x, xh):
        """Adds the same batch's inputs in the original network (x) and in the compressed
        network (xh)."""
        if self._geometry is None:
            a = _host_array(x, self.dtype, "activation batch", 2)
            ah = _host_array(xh, self.dtype, "activation batch", 2)
            self._s.add(a, ah)
            return self
        what = "feature-map batch (images, C, H, W)"
        a, ah = (_host_array(v, self.dtype, what, 4) for v in (x, xh))
        if self._prepad is not None:
            top, bottom, left, right = self._prepad
            widths = ((0, 0), (0, 0), (top, bottom), (left, right))
            a, ah = np.pad(a, widths), np.pad(ah, widths)
        self._s.add_maps(a, ah)
        return self

    def __repr__(self):
        return (f"dalr.CrossStats(n={self.n}, count={self.count}, precision='{self.precision}', "
                f"device='{self.device}', conv={self._geometry is not None})")


def asymmetric_solve(weight, bias, hat, orig, cross, method="dalr", rank=None, keep=None,
                     lam=None, lam_rel=1e-3, device="cpu", error=True):
    """The asymmetric fit of one layer y = W x + b: the factored layer takes its inputs xh
    in the compressed network and is fitted to the ORIGINAL network's outputs W x,
    min ||W X - A B Xh||^2 + lam ||A B||^2 at rank k. hat: the Stats of xh (C^), orig: the
    Stats of x (C_o), cross: their CrossStats (K = X Xh^T), all from the same samples
    (ConvStats and CrossStats.like(...) of the same geometry for a conv layer).
    W_r = W K (C^ + lam I)^-1; dalr: A = the top-k eigenvectors of W C_o W^T; dalr-exact:
    of W_r (C^ + lam I) W_r^T; B = A^T W_r, bias = b. lam by default lam_rel * trace(C^)/n.
    Other arguments and the result (Factors, conv-shaped for a conv layer) as dalr.solve;
    the report's error_train is the error against the original outputs."""
    if not isinstance(hat, Stats) or not isinstance(orig, Stats):
        raise Error("asymmetric_solve: hat and orig must be dalr.Stats (or dalr.ConvStats)")
    if not isinstance(cross, CrossStats):
        raise Error("asymmetric_solve: cross must be a dalr.CrossStats")
    geometries = [getattr(s, "_geometry", None) for s in (hat, orig, cross)]
    if geometries.count(geometries[0]) != 3:
        raise Error("asymmetric_solve: hat, orig and cross must be statistics of the same layer "
                    "(all rows, or all feature maps of the same conv geometry: ConvStats and "
                    f"CrossStats.like); got {geometries}")
    w, b, conv_shape, kernel = _layer_for(weight, bias, hat, "asymmetric_solve")
    r = _dalr.asymmetric_solve(hat._s, orig._s, cross._s, w, b, method,
                               *_solve_args(rank, keep, lam, lam_rel, device, error),
                               bias is not None)
    return _factors(r, weight, w.shape, conv_shape, kernel)
