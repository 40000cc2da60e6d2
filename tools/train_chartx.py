#!/usr/bin/python3
"""Trains the second shipped example, examples/fortunes-chartx/: a small character-level
transformer on the English text of Debian's `fortunes` package (about 10 minutes on 2 CPU
cores). Corpus, split and model: tools/chartx.py.

Writes into OUT (default examples/fortunes-chartx):
  model.safetensors   the state_dict (float32), its config in the metadata (chartx.config)
  vocab.json          the 97 symbols, index -> character
  train_log.json      the run: config, seeds, losses, times, corpus hashes, parameter counts

Usage: /usr/bin/python3 tools/train_chartx.py [--out DIR] [--seed 0] [--steps 400]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chartx  # noqa: E402
import dalr_format  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "examples", "fortunes-chartx"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_all = time.time()

    def log(s):
        print(s, flush=True)

    train_text, val_text = chartx.splits()
    tr = torch.from_numpy(chartx.encode(train_text).astype(np.int64))
    va = chartx.encode(val_text)
    cfg = {"vocab": len(chartx.VOCAB), "ctx": args.ctx, "d": args.d, "layers": args.layers,
           "heads": 4, "mlp": 4}
    model = chartx.build_model(**cfg)
    n_params = sum(p.numel() for p in model.parameters())
    mlp_params = sum(p.numel() for n in chartx.mlp_layers(model)
                     for p in model.get_submodule(n).parameters())
    log(f"train {len(train_text)} chars, validation {len(val_text)} chars; "
        f"{n_params} parameters ({mlp_params} in the MLPs)")

    # AdamW, linear warm-up then cosine decay to 10%; batches of random windows of the
    # training text drawn with one seeded generator
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "tok" not in n and "pos" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "tok" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), foreach=True)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        q = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q)))

    losses = []
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = torch.randint(0, len(tr) - args.ctx - 1, (args.batch,), generator=gen)
        w = torch.stack([tr[s:s + args.ctx + 1] for s in starts.tolist()])
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            log(f"step {step + 1}/{args.steps}: train loss {np.mean(losses[-25:]):.4f} "
                f"(lr {lr_at(step):.2e}, {time.time() - t0:.0f} s)")
    train_s = time.time() - t0

    t0 = time.time()
    win = chartx.windows(va, args.ctx)
    val_loss = chartx.eval_loss(model, win)
    # the first 64 windows: what the ctest recomputes from the shipped model
    val_loss_64 = chartx.eval_loss(model, win[:64])
    eval_s = time.time() - t0
    log(f"validation: {val_loss:.4f} nats/char = {val_loss / math.log(2):.4f} bits/char "
        f"(perplexity {math.exp(val_loss):.3f}) over {win.shape[0] * args.ctx} characters")

    os.makedirs(args.out, exist_ok=True)
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dalr_format.write_safetensors(os.path.join(args.out, "model.safetensors"), tensors,
                                  {"chartx.config": json.dumps(cfg, separators=(",", ":"))})
    with open(os.path.join(args.out, "vocab.json"), "w") as f:
        json.dump(list(chartx.VOCAB), f)
        f.write("\n")
    info = {
        "config": cfg, "seed": args.seed, "steps": args.steps, "batch": args.batch,
        "lr": args.lr, "warmup": args.warmup, "weight_decay": 0.1, "threads": args.threads,
        "torch": torch.__version__, "parameters": n_params, "mlp_parameters": mlp_params,
        "train_chars": len(train_text), "val_chars": len(val_text),
        "train_sha256": chartx.sha256(train_text), "val_sha256": chartx.sha256(val_text),
        "train_loss_every_25": [round(float(np.mean(losses[i:i + 25])), 4) for i in range(0, len(losses), 25)],
        "val_windows": int(win.shape[0]), "val_loss": val_loss, "val_bpc": val_loss / math.log(2),
        "val_loss_first64": val_loss_64,
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "total_s": round(time.time() - t_all, 1),
    }
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    log(f"wrote {args.out} ({info['total_s']} s in all)")


if __name__ == "__main__":
    main()
