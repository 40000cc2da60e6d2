"""The second shipped example, examples/fortunes-chartx/, from a clean clone: the corpus and
its split rebuild from Debian's `fortunes` package exactly as at training time (hashes in
train_log.json); the committed model loads and its validation loss on the first 64 windows
is the one the training run logged; and on that model's real MLP activations the engine's
dalr-exact at lambda = 0 (through the CLI route of tools/compress_chartx.py) equals an
independent NumPy SVD-LLM (Cholesky whitening) and reconstructs the layer's outputs no worse
than svd, asvd and dalr (it is the minimiser of that error).

Run by ctest: test_chartx_example.py DALR_GPU SOURCE_DIR. Exit 77 = skipped (no fortunes
package, no torch or numpy)."""
import json
import math
import os
import sys
import tempfile

if not os.path.isdir("/usr/share/games/fortunes"):
    print("/usr/share/games/fortunes missing (Debian package `fortunes`): skipped")
    sys.exit(77)
try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"{e.name} missing (Debian's python3-torch, python3-numpy): skipped")
    sys.exit(77)

dalr_gpu, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tools"))
import chartx  # noqa: E402
import compress_chartx as cc  # noqa: E402

torch.set_num_threads(2)
from tool_checks import check, finish  # noqa: E402


example = os.path.join(src, "examples", "fortunes-chartx")
with open(os.path.join(example, "train_log.json")) as f:
    log = json.load(f)

train_text, val_text = chartx.splits()
check(chartx.sha256(train_text) == log["train_sha256"] and chartx.sha256(val_text) == log["val_sha256"],
      f"corpus split: {len(train_text)} / {len(val_text)} characters, the hashes of the training run "
      "(a different `fortunes` package version would change them)")

model, cfg = chartx.load_model(os.path.join(example, "model.safetensors"))
check(sum(p.numel() for p in model.parameters()) == log["parameters"], f"{log['parameters']} parameters")
val = chartx.windows(chartx.encode(val_text), cfg["ctx"], 64)
loss = chartx.eval_loss(model, val)
# float32 on another BLAS or thread count: agreement to 1e-4 relative, not bitwise
check(abs(loss - log["val_loss_first64"]) <= 1e-4 * log["val_loss_first64"],
      f"validation loss on the first 64 windows {loss:.6f}, logged {log['val_loss_first64']:.6f}")
check(loss < math.log(len(chartx.VOCAB)) - 1.5, f"the model has learned something: {loss:.3f} nats "
      f"against {math.log(len(chartx.VOCAB)):.3f} for a uniform guess")

# real activations: 64 calibration windows of the training split, one block's MLP
tr = chartx.encode(train_text)
starts = np.sort(np.random.RandomState(1).randint(0, len(tr) - cfg["ctx"], 64))
calib = np.stack([tr[s:s + cfg["ctx"]] for s in starts])
names = ["blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]
acts = cc.collect_inputs(model, names, calib)
ranks = {nm: cc.rank_for_keep(model.get_submodule(nm).out_features,
                              model.get_submodule(nm).in_features, 0.35) for nm in names}


def product(seq):
    return (seq[1].weight.detach().double() @ seq[0].weight.detach().double()).numpy()


def svdllm(w, x, k):
    """SVD-LLM's truncation-aware whitening: S = chol(X^T X), SVD of W S, truncate, S^-1."""
    s = np.linalg.cholesky(x.T @ x)
    u, sv, vt = np.linalg.svd(w @ s, full_matrices=False)
    return (u[:, :k] * sv[:k]) @ np.linalg.solve(s.T, vt[:k].T).T


with tempfile.TemporaryDirectory(prefix="chartx-test-") as work:
    outs = {m: cc.engine_cli(model, ranks, acts, m, cc.LAMBDA[m], dalr_gpu, work)[0]
            for m in ("svd", "dalr", "dalr-exact")}
for nm in names:
    lin = model.get_submodule(nm)
    w = lin.weight.detach().double().numpy()
    x = acts[nm].astype(np.float64)
    k = ranks[nm]
    ref = svdllm(w, x, k)
    got = product(outs["dalr-exact"].get_submodule(nm))
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    check(rel < 1e-5, f"{nm} (rank {k}, {x.shape[0]} rows): engine dalr-exact lambda 0 vs NumPy "
          f"SVD-LLM, relative difference {rel:.2e}")
    err = lambda m_: np.linalg.norm((w - m_) @ x.T) / np.linalg.norm(w @ x.T)
    b, a, _ = cc.asvd(lin.weight.detach().numpy(), lin.bias.detach().numpy(), acts[nm], k, 0.5)
    e = {"dalr-exact": err(got), "svd": err(product(outs["svd"].get_submodule(nm))),
         "dalr": err(product(outs["dalr"].get_submodule(nm))), "asvd": err(a @ b)}
    check(all(e["dalr-exact"] <= v * (1 + 1e-9) for v in e.values()),
          f"{nm}: output reconstruction error " + ", ".join(f"{m} {v:.4f}" for m, v in e.items()))

finish()
