"""dalr.ConvStats: the statistics of a conv layer's input patches, from its feature maps."""
import numpy as np

from ._api import Error, Stats, _DTYPES, _host_array, _is_torch, _weight_matrix


def _pair(v, what, minimum):
    """An int or a pair of ints (PyTorch's convention), each >= minimum, as a tuple."""
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2 or any(isinstance(x, bool) or not isinstance(x, (int, np.integer))
                             for x in vals):
        raise Error(f"{what} must be an int or a pair of ints, got {v!r}")
    if any(x < minimum for x in vals):
        raise Error(f"{what} must be at least {minimum}, got {v!r}")
    return int(vals[0]), int(vals[1])


def conv_geometry(kernel_size, stride=1, padding=0, dilation=1):
    """A Conv2d's geometry as the patch statistics take it: (kh, kw, stride, dilation,
    (top, bottom, left, right) padding). PyTorch's arguments: ints or pairs, padding also
    'valid' or 'same' (odd total padding: the extra row/column at the bottom/right, as
    PyTorch). One stride and one dilation serve both axes: unequal pairs raise Error."""
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    sh, sw = _pair(stride, "stride", 1)
    dh, dw = _pair(dilation, "dilation", 1)
    if sh != sw or dh != dw:
        raise Error(f"stride {(sh, sw)} and dilation {(dh, dw)}: the patch statistics take one "
                    "stride and one dilation for both axes (unequal pairs are not supported)")
    if isinstance(padding, str):
        if padding == "valid":
            return kh, kw, sh, dh, (0, 0, 0, 0)
        if padding != "same":
            raise Error(f"padding must be an int, a pair, 'valid' or 'same', got '{padding}'")
        if sh != 1:
            raise Error("padding='same' needs stride 1 (as in PyTorch)")
        th, tw = dh * (kh - 1), dh * (kw - 1)
        return kh, kw, sh, dh, (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = _pair(padding, "padding", 0)
    return kh, kw, sh, dh, (ph, ph, pw, pw)


class ConvStats(Stats):
    """Streaming statistics of a conv layer's input patches (im2col without the patch
    matrix): a Conv2d with weight W (c_out, c_in, kh, kw) is y = W_mat x_patch + b at every
    output position, W_mat = W.reshape(c_out, c_in*kh*kw), so C = sum of x_patch x_patch^T
    over images and positions is all dalr.solve needs. Width n = c_in*kh*kw; count is in
    patches (images x output positions), images in images.

    ``ConvStats(channels, kernel_size, stride=1, padding=0, dilation=1, precision="fp64",
    device="cpu", weight=None, bias=None)`` with PyTorch's Conv2d arguments (non-square
    kernels and padding pairs too, padding 'same'/'valid'; groups=1, zero padding).
    ``weight`` (c_out, c_in, kh, kw) and ``bias`` keep the relu outputs' statistics, as in
    Stats. add() takes feature maps (images, C, H, W); H and W may change between batches
    (each change of size costs one copy of the n x n statistics).
    """

    def __init__(self, channels, kernel_size, stride=1, padding=0, dilation=1, precision="fp64",
                 device="cpu", weight=None, bias=None):
        kh, kw, s, d, pads = conv_geometry(kernel_size, stride, padding, dilation)
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) \
                or channels < 1:
            raise Error(f"ConvStats: channels must be an int >= 1, got {channels!r}")
        n = int(channels) * kh * kw
        if weight is not None:
            if precision not in _DTYPES:
                raise Error(f"precision must be fp64, fp32 or tf32 for statistics (got "
                            f"'{precision}')")
            weight, shape = _weight_matrix(weight, _DTYPES[precision])
            if shape is not None and shape[1:] != (channels, kh, kw):
                raise Error(f"ConvStats: the weight's shape {shape} does not match "
                            f"{channels} channels and a {kh} x {kw} kernel")
        super().__init__(n, precision, device, weight=weight, bias=bias)
        self._geometry = (int(channels), (kh, kw), s, pads, d)
        # Equal padding on all sides is the accumulator's; other padding ('same' with an
        # even kernel, pairs) is applied to the maps before they are added.
        self._prepad = None if len(set(pads)) == 1 else pads
        self._s.set_conv(int(channels), kh, kw, s, pads[0] if self._prepad is None else 0, d)

    @property
    def channels(self):
        return self._geometry[0]

    @property
    def kernel_size(self):
        return self._geometry[1]

    @property
    def stride(self):
        return self._geometry[2]

    @property
    def padding(self):
        """(top, bottom, left, right)."""
        return self._geometry[3]

    @property
    def dilation(self):
        return self._geometry[4]

    @property
    def images(self):
        """Feature maps added so far (count is in patches)."""
        return self._s.images

    def add(self, x):
        """Adds a batch of input feature maps x of shape (images, C, H, W), NumPy or torch
        (any float dtype; converted to the statistics' precision). A CUDA tensor on the
        statistics' device is read in place when the backend's conv accumulator takes
        device maps, else copied to the host, as is a CUDA tensor for CPU statistics."""
        if _is_torch(x) and x.device.type == "cuda" and self.device != "cpu":
            import torch
            t = x.detach()
            if t.dim() != 4:
                raise Error("feature-map batch must have 4 dimensions (images, C, H, W), got "
                            f"shape {tuple(t.shape)}")
            t = t.to(torch.float64 if self.dtype == np.float64 else torch.float32)
            if self._prepad is not None:
                top, bottom, left, right = self._prepad
                t = torch.nn.functional.pad(t, (left, right, top, bottom))
            t = t.contiguous()
            if self._s.add_maps_cuda(t, torch.cuda.current_stream(t.device).cuda_stream):
                return self
            self._s.add_maps(_host_array(t, self.dtype, "feature-map batch", 4))
            return self
        a = _host_array(x, self.dtype, "feature-map batch (images, C, H, W)", 4)
        if self._prepad is not None:
            top, bottom, left, right = self._prepad
            a = np.pad(a, ((0, 0), (0, 0), (top, bottom), (left, right)))
        self._s.add_maps(a)
        return self

    def __repr__(self):
        return (f"dalr.ConvStats(channels={self.channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"n={self.n}, images={self.images}, count={self.count}, "
                f"precision='{self.precision}', device='{self.device}')")
