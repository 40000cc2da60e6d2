"""dalr.compress: an nn.Module in, a copy out with named nn.Linear layers factored."""
import copy
import sys
import time

from ._api import Error, Stats, cuda_available, solve

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


def _check_ranks(model, ranks):
    import torch
    if not isinstance(ranks, dict) or not ranks:
        raise Error("ranks must be a non-empty dict {module name: rank (int) or kept fraction (float)}")
    modules = dict(model.named_modules())
    layers = {}
    for name, r in ranks.items():
        if name not in modules:
            linear = [k for k, v in modules.items() if isinstance(v, torch.nn.Linear)]
            hint = ", ".join(linear[:8]) + (", ..." if len(linear) > 8 else "")
            raise Error(f"unknown module '{name}': not in model.named_modules() "
                        f"(its nn.Linear modules: {hint or 'none'})")
        mod = modules[name]
        if not isinstance(mod, torch.nn.Linear):
            raise Error(f"module '{name}' is a {type(mod).__name__}, not an nn.Linear")
        m, n = mod.weight.shape
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


def _factored(linear, f):
    """nn.Sequential(Linear(n, k, bias=False), Linear(k, m)) holding the factors."""
    import torch
    m, n = linear.weight.shape
    k = f.B.shape[0]
    dd = dict(device=linear.weight.device, dtype=linear.weight.dtype)
    first = torch.nn.Linear(n, k, bias=False, **dd)
    second = torch.nn.Linear(k, m, bias=True, **dd)
    with torch.no_grad():
        first.weight.copy_(torch.as_tensor(f.B).to(**dd))
        second.weight.copy_(torch.as_tensor(f.A).to(**dd))
        second.bias.copy_(torch.as_tensor(f.bias).to(**dd))
    return torch.nn.Sequential(first, second)


def compress(model, ranks, data, method="dalr", device=None, precision=None, lam=None,
             lam_rel=1e-3, progress=True):
    """Compresses the named nn.Linear modules of `model` from its own activations.

    ranks: {name from model.named_modules(): rank (int) or kept fraction of the layer's
    weights (float in (0, 1])}. data: an iterable of batches (a tensor, or a tuple/list
    whose first item is the input; moved to the model's device) or a callable that
    runs the model itself, e.g. ``lambda m: [m(x) for x in loader]``. The model runs once
    in eval mode under torch.no_grad(); forward hooks stream every named layer's inputs
    (shape (batch, ..., n), flattened to rows) into a dalr.Stats. method: dalr,
    dalr-exact, svd or svd-bc (pruning changes a layer's width: use dalr.solve).
    device: "cpu" or "cuda[:N]" for the statistics and the solve (default: the model's
    device when this package has CUDA, else cpu). precision: fp64 or fp32 (default
    fp64 on the CPU, fp32 on a GPU). lam: absolute ridge (default lam_rel * trace(C)/n).

    Returns (compressed, report): a deep copy of the model, each named module replaced by
    nn.Sequential(nn.Linear(n, k, bias=False), nn.Linear(k, m)); `model` is untouched.
    report maps each name to the CLI's report fields for its layer.
    """
    import torch
    if method not in _FACTOR_METHODS:
        raise Error(f"method '{method}' cannot be used by compress(): choose one of "
                    f"{', '.join(_FACTOR_METHODS)} (pruning changes the layer's output width; "
                    "use dalr.solve)")
    layers = _check_ranks(model, ranks)
    param = next(model.parameters(), None)
    model_device = param.device if param is not None else None
    if device is None:
        device = ("cuda" if model_device is not None and model_device.type == "cuda"
                  and cuda_available() else "cpu")
        if device == "cuda" and model_device.index is not None:
            device = f"cuda:{model_device.index}"
    if precision is None:
        precision = "fp64" if device == "cpu" else "fp32"

    stats = {name: Stats(mod.in_features, precision, device) for name, mod in layers.items()}
    state = {"batch": 0}
    t0 = time.monotonic()

    def hook_for(name, n):
        def hook(_mod, inputs, _out):
            x = inputs[0]
            if x.shape[-1] != n:
                raise Error(f"module '{name}': input of shape {tuple(x.shape)} has not {n} features")
            try:
                stats[name].add(x.reshape(-1, n))
            except Error as e:
                raise Error(f"batch {state['batch']}, module '{name}': {e}") from None
        return hook

    handles = [mod.register_forward_hook(hook_for(name, mod.in_features))
               for name, mod in layers.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if callable(data) and not isinstance(data, torch.Tensor):
                data(model)
            else:
                for i, batch in enumerate(data):
                    state["batch"] = i
                    model(_move(_first_input(batch), model_device))
                    if progress and (i + 1) % 50 == 0:
                        print(f"dalr.compress: {i + 1} batches, {time.monotonic() - t0:.1f} s",
                              file=sys.stderr)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, st in stats.items():
        if st.count == 0:
            raise Error(f"module '{name}' saw no inputs while the model ran on the data "
                        "(is it used in forward()? a fused fast path, e.g. "
                        "nn.TransformerEncoderLayer's with batch_first=True in eval mode, "
                        "bypasses its submodules)")

    compressed = copy.deepcopy(model)
    report = {}
    for name, mod in layers.items():
        r = ranks[name]
        t1 = time.monotonic()
        f = solve(mod.weight, mod.bias, stats[name], method,
                  rank=r if isinstance(r, int) else None,
                  keep=r if isinstance(r, float) else None, lam=lam, lam_rel=lam_rel,
                  device=device)
        _replace(compressed, name, _factored(mod, f))
        rep = dict(f.report)
        rep["layer"] = dict(rep["layer"], name=name)
        report[name] = rep
        if progress:
            err = rep["error_train"]
            rel = "n/a" if not err or err["rel"] is None else f"{err['rel']:.4g}"
            print(f"dalr.compress: {name} ({mod.out_features} x {mod.in_features}) rank "
                  f"{f.rank}, {stats[name].count} samples, relative error {rel}, "
                  f"{time.monotonic() - t1:.2f} s", file=sys.stderr)
    return compressed, report
