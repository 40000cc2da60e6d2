"""The character-level transformer example (examples/fortunes-chartx/): corpus, model, evaluation.

Shared by tools/train_chartx.py (trains it), tools/compress_chartx.py (compresses its MLP
layers) and tests/tools/test_chartx_example.py (the ctest). Debian's Python with
python3-torch and python3-numpy; the corpus is Debian's `fortunes` package.

Corpus: every regular file without an extension under /usr/share/games/fortunes (43 files,
2.6 MB; the *.u8 names are links and the *.dat files indexes), read in sorted name order, cut
into fortunes at the lines that hold only "%". Each fortune is cleaned (overstrikes "x\\b"
removed, non-ASCII letters reduced to ASCII where NFKD can, every character outside VOCAB
dropped) and stripped of trailing blank space; empty ones are dropped. Fortune i (in that
order) goes to validation when i % 10 == 9, to training otherwise: a fixed split, no RNG.
Each split is the concatenation of its fortunes, each followed by a blank line.
"""
import hashlib
import math
import os
import unicodedata

FORTUNES = "/usr/share/games/fortunes"
# tab, newline and the 95 printable ASCII characters: 97 symbols, fixed (not read off the data)
VOCAB = "\t\n" + "".join(chr(c) for c in range(32, 127))
STOI = {c: i for i, c in enumerate(VOCAB)}


def corpus_files(root=FORTUNES):
    return sorted(f for f in os.listdir(root)
                  if "." not in f and os.path.isfile(os.path.join(root, f))
                  and not os.path.islink(os.path.join(root, f)))


def clean(text):
    out = []
    for ch in text:
        if ch == "\b":  # overstrike: "x\bx" prints one x, "_\bx" an underlined x
            if out:
                out.pop()
            continue
        if ch not in STOI:
            ch = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
            ch = "".join(c for c in ch if c in STOI)
        out.append(ch)
    return "".join(out)


def load_fortunes(root=FORTUNES):
    """The list of cleaned fortunes, in file then in-file order."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} not found: install Debian's `fortunes` package")
    fortunes = []
    for name in corpus_files(root):
        with open(os.path.join(root, name), "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        cur = []
        for line in text.split("\n"):
            if line == "%":
                fortunes.append("\n".join(cur))
                cur = []
            else:
                cur.append(line)
        fortunes.append("\n".join(cur))
    out = []
    for f in fortunes:
        c = clean(f).rstrip()
        if c.strip():
            out.append(c)
    return out


def splits(root=FORTUNES):
    """(train text, validation text)."""
    fortunes = load_fortunes(root)
    train = "".join(f + "\n\n" for i, f in enumerate(fortunes) if i % 10 != 9)
    val = "".join(f + "\n\n" for i, f in enumerate(fortunes) if i % 10 == 9)
    return train, val


def encode(text):
    import numpy as np
    return np.array([STOI[c] for c in text], dtype=np.uint8)


def sha256(text):
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# ----------------------------------------------------------------------------- model

def build_model(vocab=len(VOCAB), ctx=128, d=128, layers=4, heads=4, mlp=4):
    """A GPT-style (pre-LayerNorm, causal) transformer; every Linear is a plain nn.Linear
    named blocks.<i>.attn.{qkv,proj} and blocks.<i>.mlp.{fc1,fc2} (+ head)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.register_buffer("mask", torch.ones(ctx, ctx).tril().bool(), persistent=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
            att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
            return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(d, mlp * d)
            self.fc2 = nn.Linear(mlp * d, d)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(d)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class CharTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ctx = ctx
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(ctx, d)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab)

        def forward(self, idx):
            t = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    return CharTransformer()


def mlp_layers(model):
    """Names of the MLP Linear layers, in order (blocks.0.mlp.fc1, blocks.0.mlp.fc2, ...)."""
    return [f"blocks.{i}.mlp.{fc}" for i in range(len(model.blocks)) for fc in ("fc1", "fc2")]


def windows(tokens, ctx, count=None):
    """Non-overlapping (count, ctx + 1) windows of the token array, from its start; the +1
    is the next-character target of the last position (windows overlap by that one token)."""
    import numpy as np
    n = (len(tokens) - 1) // ctx
    if count is not None:
        n = min(n, count)
    idx = np.arange(n)[:, None] * ctx + np.arange(ctx + 1)[None, :]
    return tokens[idx]


def eval_loss(model, win, batch=64):
    """Mean cross-entropy in nats per character over all positions of the windows."""
    import torch
    import torch.nn.functional as F
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(win), batch):
            w = torch.from_numpy(win[i:i + batch].astype("int64"))
            logits = model(w[:, :-1])
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                   reduction="sum").item()
            n += w[:, 1:].numel()
    return tot / n


def load_model(path):
    """The model from a safetensors file written by train_chartx.py (its config in the
    metadata key chartx.config)."""
    import json
    import sys
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dalr_format
    tensors, meta = dalr_format.read_safetensors(path)
    cfg = json.loads(meta["chartx.config"])
    model = build_model(**cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    model.eval()
    return model, cfg
