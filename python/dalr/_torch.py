"""dalr.compress: an nn.Module in, a copy out with named nn.Linear and nn.Conv2d layers
factored."""
import collections.abc
import copy
import sys
import time

from ._api import Error, Stats, cuda_available, solve
from ._asym import CrossStats, asymmetric_solve
from ._conv import ConvStats, conv_geometry

_FACTOR_METHODS = ("dalr", "dalr-exact", "svd", "svd-bc")
_ASYMMETRIC_METHODS = ("dalr", "dalr-exact")  # svd and svd-bc fit no data: symmetric


def _first_input(batch):
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise Error("a batch is an empty tuple or list: its first item must be the input")
        return batch[0]
    if isinstance(batch, dict):
        raise Error("a batch is a dict: pass data as a callable that runs the model on it")
    return batch


def _move(x, device):
    import torch
    if isinstance(x, torch.Tensor) and device is not None and x.device != device:
        return x.to(device)
    return x


def _is_conv(mod):
    import torch
    return isinstance(mod, torch.nn.Conv2d)


def _shape(name, mod):
    """(m, n) of a layer compress() can factor (a conv layer's n: c_in kh kw); else Error."""
    import torch
    if isinstance(mod, torch.nn.Linear):
        return tuple(mod.weight.shape)
    if not _is_conv(mod):
        raise Error(f"module '{name}' is a {type(mod).__name__}, not an nn.Linear or nn.Conv2d")
    if mod.groups != 1:
        raise Error(f"module '{name}': a grouped convolution (groups={mod.groups}) cannot be "
                    "factored; compress() takes Conv2d layers with groups=1")
    if mod.padding_mode != "zeros":
        raise Error(f"module '{name}': padding_mode='{mod.padding_mode}' is not supported; "
                    "compress() takes Conv2d layers with padding_mode='zeros'")
    try:
        conv_geometry(mod.kernel_size, mod.stride, mod.padding, mod.dilation)
    except Error as e:
        raise Error(f"module '{name}': {e}") from None
    c_out, c_in, kh, kw = mod.weight.shape
    return c_out, c_in * kh * kw


def _check_ranks(model, ranks):
    if not isinstance(ranks, dict) or not ranks:
        raise Error("ranks must be a non-empty dict {module name: rank (int) or kept fraction (float)}")
    import torch
    modules = dict(model.named_modules())
    layers = {}
    for name, r in ranks.items():
        if name not in modules:
            known = [k for k, v in modules.items()
                     if isinstance(v, (torch.nn.Linear, torch.nn.Conv2d))]
            hint = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
            raise Error(f"unknown module '{name}': not in model.named_modules() "
                        f"(its nn.Linear and nn.Conv2d modules: {hint or 'none'})")
        mod = modules[name]
        m, n = _shape(name, mod)
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise Error(f"module '{name}': the rank must be an int or a kept fraction (float), "
                        f"got {r!r}")
        if isinstance(r, int):
            if not 1 <= r <= min(m, n):
                raise Error(f"module '{name}': rank {r} is out of range: it must be between 1 and "
                            f"{min(m, n)} for a {m} x {n} layer")
        elif not 0 < r <= 1:
            raise Error(f"module '{name}': a kept fraction must be in (0, 1], got {r}")
        layers[name] = mod
    return layers


def _replace(root, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _factored(layer, f):
    """nn.Sequential(Linear(n, k, bias=False), Linear(k, m)) holding the factors, or for a
    conv layer nn.Sequential(Conv2d(c_in, k, kernel, stride, padding, dilation, bias=False),
    Conv2d(k, c_out, 1))."""
    import torch
    k = f.B.shape[0]
    dd = dict(device=layer.weight.device, dtype=layer.weight.dtype)
    if _is_conv(layer):
        first = torch.nn.Conv2d(layer.in_channels, k, layer.kernel_size, stride=layer.stride,
                                padding=layer.padding, dilation=layer.dilation, bias=False, **dd)
        second = torch.nn.Conv2d(k, layer.out_channels, 1, bias=True, **dd)
    else:
        m, n = layer.weight.shape
        first = torch.nn.Linear(n, k, bias=False, **dd)
        second = torch.nn.Linear(k, m, bias=True, **dd)
    with torch.no_grad():
        first.weight.copy_(torch.as_tensor(f.B).to(**dd))
        second.weight.copy_(torch.as_tensor(f.A).to(**dd))
        second.bias.copy_(torch.as_tensor(f.bias).to(**dd))
    return torch.nn.Sequential(first, second)


def _new_stats(mod, precision, device):
    if _is_conv(mod):
        return ConvStats(mod.in_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                         precision, device)
    return Stats(mod.in_features, precision, device)


def _layer_input(name, mod, inputs):
    """A layer's input as its statistics take it: an nn.Conv2d's feature maps (images, C,
    H, W), an nn.Linear's (batch, ..., n) flattened to rows (batch..., n)."""
    x = inputs[0]
    if _is_conv(mod):
        return x.unsqueeze(0) if x.dim() == 3 else x  # Conv2d's unbatched input (C, H, W)
    n = mod.in_features
    if x.shape[-1] != n:
        raise Error(f"module '{name}': input of shape {tuple(x.shape)} has not {n} features")
    return x.reshape(-1, n)


def _hook_for(name, mod, stats, want, order, state):
    """The forward hook of one layer: notes the order in which the layers first run and
    streams the inputs of the layers `want` accepts into stats[name]."""

    def hook(_mod, inputs, _out):
        if name not in order:
            order.append(name)
        if not want(name):
            return
        x = _layer_input(name, mod, inputs)
        try:
            if name not in stats:
                stats[name] = _new_stats(mod, state["precision"], state["device"])
            stats[name].add(x)
        except Error as e:
            raise Error(f"batch {state['batch']}, module '{name}': {e}") from None
    return hook


def _run(runner, data, state, progress, label):
    """Runs `runner` once over `data` under torch.no_grad()."""
    import torch
    param = next(runner.parameters(), None)
    model_device = param.device if param is not None else None
    t0 = time.monotonic()
    with torch.no_grad():
        if callable(data) and not isinstance(data, torch.Tensor):
            data(runner)
        else:
            for i, batch in enumerate(data):
                state["batch"] = i
                runner(_move(_first_input(batch), model_device))
                if progress and (i + 1) % 50 == 0:
                    print(f"dalr.compress: {label}{i + 1} batches, "
                          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)


def _no_inputs(name):
    return Error(f"module '{name}' saw no inputs while the model ran on the data "
                 "(is it used in forward()? a fused fast path, e.g. "
                 "nn.TransformerEncoderLayer's with batch_first=True in eval mode, "
                 "bypasses its submodules)")


def _data_pass(work, layers, data, state, progress, label, first_only=False):
    """Runs `work` once over `data` with hooks on `layers` ({name: module}); returns the
    statistics of the layers (first_only: of the one that runs first) and the order in
    which the layers first ran."""
    stats, order = {}, []
    want = (lambda name: name == order[0]) if first_only else (lambda _: True)
    handles = [mod.register_forward_hook(_hook_for(name, mod, stats, want, order, state))
               for name, mod in layers.items()]
    try:
        _run(work, data, state, progress, label)
    finally:
        for h in handles:
            h.remove()
    for name in layers:
        if name not in order or (want(name) and stats[name].count == 0):
            raise _no_inputs(name)
    return stats, order


def _asymmetric_pass(orig, work, name, data, state, progress, label):
    """The asymmetric statistics of layer `name`: every batch runs through the original
    model `orig` (the layer's inputs X) and then through `work`, whose earlier layers are
    replaced (X^); returns (C^ of X^, C_o of X, K = X X^^T). A callable `data` is given a
    module that runs both models and returns work's output."""
    import torch
    mod = work.get_submodule(name)
    got = {"x": [], "xh": []}
    stats = []

    def grab(key):
        def hook(_mod, inputs, _out):
            got[key].append(_layer_input(name, mod, inputs))
        return hook

    def feed():
        xs, xhs = got["x"], got["xh"]
        if len(xs) != len(xhs):
            raise Error(f"the layer ran {len(xs)} time(s) in the original model and {len(xhs)} "
                        "in the compressed one on the same batch (use sequential='symmetric')")
        for x, xh in zip(xs, xhs):
            if x.shape != xh.shape:
                raise Error(f"its input has shape {tuple(x.shape)} in the original model and "
                            f"{tuple(xh.shape)} in the compressed one")
            if not stats:
                hat = _new_stats(mod, state["precision"], state["device"])
                stats.extend([hat, _new_stats(mod, state["precision"], state["device"]),
                              CrossStats.like(hat)])
            stats[0].add(xh)
            stats[1].add(x)
            stats[2].add(x, xh)

    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.orig, self.work = orig, work

        def forward(self, *args, **kwargs):
            got["x"].clear()
            got["xh"].clear()
            self.orig(*args, **kwargs)
            out = self.work(*args, **kwargs)
            try:
                feed()
            except Error as e:
                raise Error(f"batch {state['batch']}, module '{name}': {e}") from None
            finally:
                got["x"].clear()
                got["xh"].clear()
            return out

    handles = [orig.get_submodule(name).register_forward_hook(grab("x")),
               mod.register_forward_hook(grab("xh"))]
    try:
        _run(Both(), data, state, progress, label)
    finally:
        for h in handles:
            h.remove()
    if not stats or stats[0].count == 0:
        raise _no_inputs(name)
    return tuple(stats)


def _layer_report(name, mod, f, sequential):
    rep = dict(f.report)
    rep["layer"] = dict(rep["layer"], name=name)
    if _is_conv(mod):
        rep["layer"].update(kind="conv2d", kernel_size=list(mod.kernel_size),
                            stride=list(mod.stride), dilation=list(mod.dilation),
                            padding=mod.padding if isinstance(mod.padding, str)
                            else list(mod.padding))
    if sequential or _is_conv(mod):
        rep["sequential"] = sequential
    return rep


def compress(model, ranks, data, method="dalr", device=None, precision=None, lam=None,
             lam_rel=1e-3, sequential=None, progress=True):
    """Compresses the named nn.Linear and nn.Conv2d modules of `model` from its own
    activations.

    ranks: {name from model.named_modules(): rank (int) or kept fraction of the layer's
    weights (float in (0, 1])}. data: an iterable of batches (a tensor, or a tuple/list
    whose first item is the input; moved to the model's device) or a callable that
    runs the model it is given, e.g. ``lambda m: [m(x) for x in loader]``. The model runs
    in eval mode under torch.no_grad(); forward hooks stream every named layer's inputs
    into the statistics: an nn.Linear's (batch, ..., n) inputs flattened to rows into a
    dalr.Stats, an nn.Conv2d's feature maps into a dalr.ConvStats (its patches; groups=1
    and padding_mode='zeros' only). method: dalr, dalr-exact, svd or svd-bc (pruning
    changes a layer's width: use dalr.solve). device: "cpu" or "cuda[:N]" for the
    statistics and the solve (default: the model's device when this package has CUDA,
    else cpu). precision: fp64 or fp32 (default fp64 on the CPU, fp32 on a GPU). lam:
    absolute ridge (default lam_rel * trace(C)/n).

    sequential: "asymmetric" (or True) compresses the layers one at a time in the order
    the model first runs them, each fitted from its inputs in the model whose earlier named
    layers are already replaced to the ORIGINAL model's outputs of that layer (Zhang et
    al., "Accelerating very deep convolutional networks", 2015; the CLI's default
    ``--sequential asymmetric``, dalr.asymmetric_solve): every batch runs through a copy of
    the original model and through the compressed one, so errors of earlier layers are
    corrected rather than followed. "symmetric" also goes one layer at a time but solves
    each layer from its inputs in the compressed model alone (``--sequential
    symmetric``). Both take one pass over the data per layer, so data must be re-iterable
    (a list, a DataLoader or a callable, not a generator); a callable is then given a
    module that runs both models and returns the compressed one's output. The first layer
    to run, and every layer under svd or svd-bc (which fit no data), get the ordinary
    solve. The asymmetric fit solves with C^ + lam I by Cholesky: lam=0 raises, use
    "symmetric" there. False compresses every layer from the original model in one pass.
    Default: "asymmetric" when a Conv2d is named, else False.

    Returns (compressed, report): a deep copy of the model, each named module replaced by
    nn.Sequential(nn.Linear(n, k, bias=False), nn.Linear(k, m)) or by
    nn.Sequential(nn.Conv2d(c_in, k, kernel, stride, padding, dilation, bias=False),
    nn.Conv2d(k, c_out, 1)); `model` is untouched (the hooks run on deep copies). report
    maps each name to the CLI's report fields for its layer (conv layers add
    flops_per_position; "sequential" is the fit the layer got: "asymmetric", "symmetric"
    (also svd and svd-bc in asymmetric mode) or False).
    """
    if method not in _FACTOR_METHODS:
        raise Error(f"method '{method}' cannot be used by compress(): choose one of "
                    f"{', '.join(_FACTOR_METHODS)} (pruning changes the layer's output width; "
                    "use dalr.solve)")
    layers = _check_ranks(model, ranks)
    if not (sequential is None or isinstance(sequential, bool)
            or (isinstance(sequential, str) and sequential in ("asymmetric", "symmetric"))):
        raise Error(f"sequential must be 'asymmetric' (or True), 'symmetric' or False, got "
                    f"{sequential!r}")
    if sequential is None:
        sequential = any(_is_conv(m) for m in layers.values())
    if sequential is True:
        sequential = "asymmetric"
    if sequential and len(layers) > 1 and isinstance(data, collections.abc.Iterator):
        raise Error("sequential compression runs the data once per layer: pass a list, a "
                    "DataLoader or a callable, not an iterator or generator (or sequential=False)")
    asymmetric = sequential == "asymmetric" and method in _ASYMMETRIC_METHODS
    fit = "asymmetric" if asymmetric else ("symmetric" if sequential else False)
    if asymmetric and lam is not None and not lam > 0:
        raise Error(f"the asymmetric fit solves with C^ + lam I by Cholesky and needs lam > 0 "
                    f"(got {lam}): give lam above 0 or use sequential='symmetric'")
    param = next(model.parameters(), None)
    model_device = param.device if param is not None else None
    if device is None:
        device = ("cuda" if model_device is not None and model_device.type == "cuda"
                  and cuda_available() else "cpu")
        if device == "cuda" and model_device.index is not None:
            device = f"cuda:{model_device.index}"
    if precision is None:
        precision = "fp64" if device == "cpu" else "fp32"

    work = copy.deepcopy(model)
    mods = {name: work.get_submodule(name) for name in layers}
    state = {"batch": 0, "precision": precision, "device": device}
    report = {}

    def finish(name, st):
        """Solves layer `name` from its Stats, or asymmetrically from (C^, C_o, K)."""
        mod, r = mods[name], ranks[name]
        t1 = time.monotonic()
        kw = dict(rank=r if isinstance(r, int) else None, keep=r if isinstance(r, float) else None,
                  lam=lam, lam_rel=lam_rel, device=device)
        asym_fit = isinstance(st, tuple)
        if asym_fit:
            f = asymmetric_solve(mod.weight, mod.bias, *st, method, **kw)
            st = st[0]
        else:
            f = solve(mod.weight, mod.bias, st, method, **kw)
        _replace(work, name, _factored(mod, f))
        report[name] = _layer_report(name, mod, f, fit)
        if progress:
            err = report[name]["error_train"]
            rel = "n/a" if not err or err["rel"] is None else f"{err['rel']:.4g}"
            m, n = _shape(name, mod)
            what = f"{st.images} images, {st.count} patches" if _is_conv(mod) \
                else f"{st.count} samples"
            print(f"dalr.compress: {name} ({m} x {n}) rank {f.rank}, {what}, relative error "
                  f"{rel}{' (asymmetric fit)' if asym_fit else ''}, "
                  f"{time.monotonic() - t1:.2f} s", file=sys.stderr)

    was_training = work.training
    work.eval()
    orig = None
    try:
        if not sequential:
            stats, _ = _data_pass(work, mods, data, state, progress, "")
            for name in layers:
                finish(name, stats[name])
        else:
            # The first pass finds the order the layers run in and collects the first one's
            # statistics; each later pass, the next layer's, through the layers replaced so
            # far (and, asymmetric, through a copy of the original model too).
            stats, order = _data_pass(work, mods, data, state, progress,
                                      f"layer 1 of {len(mods)}, ", first_only=True)
            finish(order[0], stats[order[0]])  # X^ = X: the asymmetric fit is the ordinary one
            if asymmetric and len(order) > 1:
                orig = copy.deepcopy(model).eval()
            for i, name in enumerate(order[1:], 2):
                label = f"layer {i} of {len(mods)}, "
                if asymmetric:
                    st = _asymmetric_pass(orig, work, name, data, state, progress, label)
                    finish(name, st)
                else:
                    stats, _ = _data_pass(work, {name: mods[name]}, data, state, progress, label)
                    finish(name, stats[name])
    finally:
        work.train(was_training)
    return work, {name: report[name] for name in layers}
