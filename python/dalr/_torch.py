"""dalr.compress: an nn.Module in, a copy out with named nn.Linear and nn.Conv2d layers
factored."""
import collections.abc
import copy
import sys
import time

from ._api import Error, Stats, cuda_available, solve
from ._conv import ConvStats, conv_geometry

_FACTOR_METHODS = ("dalr", "dalr-exact", "svd", "svd-bc")


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


def _hook_for(name, mod, stats, want, order, state):
    """The forward hook of one layer: notes the order in which the layers first run and
    streams the inputs of the layers `want` accepts into stats[name]."""
    conv = _is_conv(mod)
    n = None if conv else mod.in_features

    def hook(_mod, inputs, _out):
        if name not in order:
            order.append(name)
        if not want(name):
            return
        x = inputs[0]
        if conv and x.dim() == 3:  # Conv2d's unbatched input (C, H, W)
            x = x.unsqueeze(0)
        if not conv and x.shape[-1] != n:
            raise Error(f"module '{name}': input of shape {tuple(x.shape)} has not {n} features")
        try:
            if name not in stats:
                stats[name] = _new_stats(mod, state["precision"], state["device"])
            stats[name].add(x if conv else x.reshape(-1, n))
        except Error as e:
            raise Error(f"batch {state['batch']}, module '{name}': {e}") from None
    return hook


def _data_pass(work, layers, data, state, progress, label, first_only=False):
    """Runs `work` once over `data` with hooks on `layers` ({name: module}); returns the
    statistics of the layers (first_only: of the one that runs first) and the order in
    which the layers first ran."""
    import torch
    stats, order = {}, []
    want = (lambda name: name == order[0]) if first_only else (lambda _: True)
    handles = [mod.register_forward_hook(_hook_for(name, mod, stats, want, order, state))
               for name, mod in layers.items()]
    param = next(work.parameters(), None)
    model_device = param.device if param is not None else None
    t0 = time.monotonic()
    try:
        with torch.no_grad():
            if callable(data) and not isinstance(data, torch.Tensor):
                data(work)
            else:
                for i, batch in enumerate(data):
                    state["batch"] = i
                    work(_move(_first_input(batch), model_device))
                    if progress and (i + 1) % 50 == 0:
                        print(f"dalr.compress: {label}{i + 1} batches, "
                              f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    finally:
        for h in handles:
            h.remove()
    for name in layers:
        if name not in order or (want(name) and stats[name].count == 0):
            raise Error(f"module '{name}' saw no inputs while the model ran on the data "
                        "(is it used in forward()? a fused fast path, e.g. "
                        "nn.TransformerEncoderLayer's with batch_first=True in eval mode, "
                        "bypasses its submodules)")
    return stats, order


def _layer_report(name, mod, f, sequential):
    rep = dict(f.report)
    rep["layer"] = dict(rep["layer"], name=name)
    if _is_conv(mod):
        rep["layer"].update(kind="conv2d", kernel_size=list(mod.kernel_size),
                            stride=list(mod.stride), dilation=list(mod.dilation),
                            padding=mod.padding if isinstance(mod.padding, str)
                            else list(mod.padding))
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

    sequential: True compresses the layers one at a time in the order the model first
    runs them, each from the statistics of the model whose earlier named layers are
    already replaced (one pass over the data per layer, so data must be re-iterable: a
    list, a DataLoader or a callable, not a generator); False compresses every layer from
    the original model in one pass. Default: True when a Conv2d is named, else False.
    The sequential fit here is symmetric (the CLI's ``--sequential symmetric``: each layer
    solved from its inputs in the compressed model alone); the CLI's default asymmetric fit
    (the original model's outputs as the target, dalr/asymmetric.hpp) has no Python entry
    point yet.

    Returns (compressed, report): a deep copy of the model, each named module replaced by
    nn.Sequential(nn.Linear(n, k, bias=False), nn.Linear(k, m)) or by
    nn.Sequential(nn.Conv2d(c_in, k, kernel, stride, padding, dilation, bias=False),
    nn.Conv2d(k, c_out, 1)); `model` is untouched (the hooks run on the copy). report
    maps each name to the CLI's report fields for its layer (conv layers add
    flops_per_position).
    """
    if method not in _FACTOR_METHODS:
        raise Error(f"method '{method}' cannot be used by compress(): choose one of "
                    f"{', '.join(_FACTOR_METHODS)} (pruning changes the layer's output width; "
                    "use dalr.solve)")
    layers = _check_ranks(model, ranks)
    if sequential is None:
        sequential = any(_is_conv(m) for m in layers.values())
    if sequential and len(layers) > 1 and isinstance(data, collections.abc.Iterator):
        raise Error("sequential compression runs the data once per layer: pass a list, a "
                    "DataLoader or a callable, not an iterator or generator (or sequential=False)")
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
        mod, r = mods[name], ranks[name]
        t1 = time.monotonic()
        f = solve(mod.weight, mod.bias, st, method, rank=r if isinstance(r, int) else None,
                  keep=r if isinstance(r, float) else None, lam=lam, lam_rel=lam_rel,
                  device=device)
        _replace(work, name, _factored(mod, f))
        report[name] = _layer_report(name, mod, f, sequential)
        if progress:
            err = report[name]["error_train"]
            rel = "n/a" if not err or err["rel"] is None else f"{err['rel']:.4g}"
            m, n = _shape(name, mod)
            what = f"{st.images} images, {st.count} patches" if _is_conv(mod) \
                else f"{st.count} samples"
            print(f"dalr.compress: {name} ({m} x {n}) rank {f.rank}, {what}, relative error "
                  f"{rel}, {time.monotonic() - t1:.2f} s", file=sys.stderr)

    was_training = work.training
    work.eval()
    try:
        if not sequential:
            stats, _ = _data_pass(work, mods, data, state, progress, "")
            for name in layers:
                finish(name, stats[name])
        else:
            # The first pass finds the order the layers run in and collects the first one's
            # statistics; each later pass, the next layer's, through the layers replaced so far.
            stats, order = _data_pass(work, mods, data, state, progress,
                                      f"layer 1 of {len(mods)}, ", first_only=True)
            finish(order[0], stats[order[0]])
            for i, name in enumerate(order[1:], 2):
                stats, _ = _data_pass(work, {name: mods[name]}, data, state, progress,
                                      f"layer {i} of {len(mods)}, ")
                finish(name, stats[name])
    finally:
        work.train(was_training)
    return work, {name: report[name] for name in layers}
