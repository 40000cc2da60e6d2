"""The Python package against the CLI and independent computations (ctest: python_api).

Run: build/pyenv/bin/python tests/python/test_api.py DALR_GPU SOURCE_DIR
(tools/install_python.sh makes build/pyenv). Checks:
  * dalr.Stats + dalr.solve equal `dalr-gpu compress` on the same activations, bit for bit
    on the CPU in fp64 (the CLI writes float32: compared after the same rounding), and the
    statistics files are the CLI's (--save-stats <-> Stats.load, Stats.save -> --stats);
  * dalr-exact at lambda 0 reaches the optimum computed independently (the tail of the
    singular values of W X^T); many small batches equal one big batch;
  * dalr.compress on a residual model with a head and on a transformer encoder layer's MLP
    returns plain modules whose state_dict loads into plain modules, leaves the user's
    model untouched, and is exact at full rank;
  * bad inputs raise dalr.Error with a message naming the problem;
  * conv layers (dalr.ConvStats, 4-D weights, nn.Conv2d in compress): tests/python/test_conv.py,
    and the asymmetric sequential fit (dalr.CrossStats, dalr.asymmetric_solve, compress's
    default): tests/python/test_asym.py, whose tests run here too.
"""
import copy
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

DALR_GPU = sys.argv[1] if len(sys.argv) > 2 else "dalr-gpu"
SRC = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..")
sys.argv = sys.argv[:1] + sys.argv[3:]
sys.path.insert(0, os.path.join(SRC, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr  # noqa: E402
import dalr_format as F  # noqa: E402
import test_asym  # noqa: E402
from test_asym import AsymmetricErrors, AsymmetricSolve, CompressAsymmetric, ExampleEqualsCli  # noqa: E402,F401,E501
test_asym.DALR_GPU, test_asym.SRC = DALR_GPU, SRC
from test_conv import CompressConv, ConvCuda, ConvErrors, ConvStatistics  # noqa: E402,F401

try:
    import torch
except ImportError:  # dalr.compress needs torch; the rest does not
    torch = None


def installed_is_current():
    """The installed package's Python files are the source's (else: rerun the installer)."""
    here = os.path.dirname(dalr.__file__)
    src = os.path.join(SRC, "python", "dalr")
    return all(filecmp.cmp(os.path.join(src, f), os.path.join(here, f), shallow=False)
               for f in os.listdir(src) if f.endswith(".py"))


def cli(*args):
    r = subprocess.run([DALR_GPU, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"dalr-gpu {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r


class CliEquality(unittest.TestCase):
    """The Python result is the CLI's."""

    @classmethod
    def setUpClass(cls):
        rng = np.random.default_rng(11)
        cls.m, cls.n, cls.p = 23, 37, 1301  # odd sizes; p spans three CLI chunks of 512
        cls.w = rng.standard_normal((cls.m, cls.n)).astype(np.float32)
        cls.b = rng.standard_normal(cls.m).astype(np.float32)
        mix = rng.standard_normal((cls.n, cls.n)) / np.sqrt(cls.n)
        cls.x = np.maximum(rng.standard_normal((cls.p, cls.n)) @ mix, 0).astype(np.float32)
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        cls.model = os.path.join(d, "m.safetensors")
        F.write_safetensors(cls.model, {"fc.weight": cls.w, "fc.bias": cls.b})
        cls.acts = os.path.join(d, "x.npy")
        np.save(cls.acts, cls.x)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def python_stats(self, with_layer=False):
        st = (dalr.Stats(self.n, "fp64", weight=self.w, bias=self.b) if with_layer
              else dalr.Stats(self.n, "fp64"))
        for i in range(0, self.p, 512):  # the CLI's --batch: the same SYRK blocks
            st.add(self.x[i:i + 512])
        return st

    def run_cli(self, method, extra=()):
        d = self.dir.name
        out, rep = os.path.join(d, f"{method}.bin"), os.path.join(d, f"{method}.json")
        cli("compress", "--model", self.model, "--layer", "fc", "--acts", self.acts, "--rank", 5,
            "--method", method, "--precision", "fp64", "--device", "cpu", "--batch", 512,
            "--out", out, "--report", rep, "--quiet", *extra)
        tensors, _ = F.read_safetensors(out)
        with open(rep) as f:
            return tensors, json.load(f)

    def check_same(self, method, f, tensors, report):
        self.assertTrue(np.array_equal(f.B.astype(np.float32), tensors["fc.0.weight"]), method)
        self.assertTrue(np.array_equal(f.A.astype(np.float32), tensors["fc.1.weight"]), method)
        self.assertTrue(np.array_equal(f.bias.astype(np.float32), tensors["fc.1.bias"]), method)
        for key in ("rank", "lambda", "lambda_rel", "energy_kept", "samples", "method", "params"):
            self.assertEqual(f.report[key], report[key], f"{method}: {key}")
        # The CLI measures the error over the activation file, Python from the statistics.
        self.assertAlmostEqual(f.report["error_train"]["abs"], report["error_train"]["abs"],
                               delta=1e-12 * report["error_train"]["abs"], msg=method)

    def test_methods_bitwise(self):
        for method in ("dalr", "dalr-exact", "svd", "svd-bc"):
            tensors, report = self.run_cli(method)
            f = dalr.solve(self.w, self.b, self.python_stats(), method, rank=5)
            self.check_same(method, f, tensors, report)

    def test_absolute_lambda_and_keep(self):
        tensors, report = self.run_cli("dalr", ["--lambda", "0.25"])
        f = dalr.solve(self.w, self.b, self.python_stats(), "dalr", rank=5, lam=0.25)
        self.check_same("dalr --lambda 0.25", f, tensors, report)
        k = dalr.solve(self.w, self.b, self.python_stats(), "svd", keep=0.2).rank
        self.assertEqual(k, int(0.2 * self.m * self.n / (self.m + self.n)))

    def test_stats_files_are_the_clis(self):
        d = self.dir.name
        saved = os.path.join(d, "cli.stats")
        cli("compress", "--model", self.model, "--layer", "fc", "--acts", self.acts, "--rank", 5,
            "--precision", "fp64", "--device", "cpu", "--batch", 512, "--out",
            os.path.join(d, "o.bin"), "--save-stats", saved, "--quiet")
        loaded = dalr.Stats.load(saved)
        self.assertEqual(loaded.count, self.p)
        ours = self.python_stats()
        a = dalr.solve(self.w, self.b, loaded, "dalr", rank=5)
        b = dalr.solve(self.w, self.b, ours, "dalr", rank=5)
        self.assertTrue(np.array_equal(a.A, b.A) and np.array_equal(a.B, b.B))
        # Python saves (with the layer: the CLI's files keep its output statistics too), the
        # CLI resumes from it (--stats, no activations).
        mine = os.path.join(d, "py.stats")
        self.python_stats(with_layer=True).save(mine, layer="fc")
        tensors, _ = self.run_cli("dalr")
        out = os.path.join(d, "from_py.bin")
        cli("compress", "--model", self.model, "--layer", "fc", "--stats", mine, "--rank", 5,
            "--precision", "fp64", "--device", "cpu", "--out", out, "--quiet")
        again, _ = F.read_safetensors(out)
        self.assertTrue(np.array_equal(again["fc.1.weight"], tensors["fc.1.weight"]))
        ours.save(mine)  # inputs only: the CLI says what it needs
        r = subprocess.run([DALR_GPU, "compress", "--model", self.model, "--layer", "fc", "--stats",
                            mine, "--rank", "5", "--out", out], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("dalr.Stats(n, weight=W, bias=b)", r.stderr)
        with self.assertRaisesRegex(dalr.Error, "not a dalr-gpu statistics file"):
            dalr.Stats.load(self.model)


class Numerics(unittest.TestCase):
    def test_dalr_exact_at_lambda_zero_is_the_optimum(self):
        rng = np.random.default_rng(3)
        for m, n, p, k in ((17, 29, 301, 4), (31, 13, 97, 13), (9, 40, 25, 3)):
            w, b = rng.standard_normal((m, n)), rng.standard_normal(m)
            x = rng.standard_normal((p, n)) * rng.uniform(0.1, 3, n)
            st = dalr.Stats(n).add(x)
            f = dalr.solve(w, b, st, "dalr-exact", rank=k, lam=0.0)
            s = np.linalg.svd(w @ x.T, compute_uv=False)  # an independent algorithm
            best = np.sqrt(np.sum(s[k:] ** 2))
            got = np.linalg.norm((w @ x.T + b[:, None]) - (f.A @ (f.B @ x.T) + f.bias[:, None]))
            self.assertLess(abs(got - best), 1e-7 * max(1.0, best), (m, n, p, k))
            self.assertAlmostEqual(f.report["error_train"]["abs"], got, delta=1e-6 * max(1, got))

    def test_small_batches_equal_one_batch(self):
        rng = np.random.default_rng(8)
        n, p = 21, 1003
        x = rng.standard_normal((p, n))
        one = dalr.Stats(n).add(x)
        many, i = dalr.Stats(n), 0
        for size in [1, 7, 300, 2, 257, 13] * 10:
            if i >= p:
                break
            many.add(x[i:i + size])
            i += size
        many.add(x[i:]) if i < p else None
        self.assertEqual(many.count, p)
        w, b = rng.standard_normal((11, n)), rng.standard_normal(11)
        f1 = dalr.solve(w, b, one, "dalr", rank=4)
        f2 = dalr.solve(w, b, many, "dalr", rank=4)
        np.testing.assert_allclose(f1.A @ f1.B, f2.A @ f2.B, rtol=1e-9, atol=1e-11)
        # merge: two halves equal the whole
        h1, h2 = dalr.Stats(n).add(x[:400]), dalr.Stats(n).add(x[400:])
        f3 = dalr.solve(w, b, h1.merge(h2), "dalr", rank=4)
        self.assertEqual(h1.count, p)
        np.testing.assert_allclose(f1.A @ f1.B, f3.A @ f3.B, rtol=1e-9, atol=1e-11)

    def test_fp32_and_pruning(self):
        rng = np.random.default_rng(4)
        n, m = 15, 12
        x = np.abs(rng.standard_normal((200, n)))
        w, b = rng.standard_normal((m, n)), rng.standard_normal(m)
        st32 = dalr.Stats(n, "fp32").add(x)
        f = dalr.solve(w, b, st32, "dalr", rank=5)
        self.assertEqual(f.A.dtype, np.float32)
        ref = dalr.solve(w, b, dalr.Stats(n).add(x), "dalr", rank=5)
        np.testing.assert_allclose(f.A @ f.B, ref.A @ ref.B, rtol=1e-3, atol=1e-4)
        # prune-mean keeps the units of largest mean relu output (brute force)
        st = dalr.Stats(n, weight=w, bias=b).add(x)
        f = dalr.solve(w, b, st, "prune-mean", rank=4)
        mean = np.maximum(x @ w.T + b, 0).mean(0)
        self.assertIsNone(f.A)
        self.assertEqual(len(f.kept_units), f.B.shape[0])
        self.assertEqual(sorted(f.kept_units), sorted(np.argsort(-mean)[:len(f.kept_units)]))
        with self.assertRaisesRegex(dalr.Error, "pruning needs the statistics of the layer's outputs"):
            dalr.solve(w, b, dalr.Stats(n).add(x), "prune-max", rank=4)


class BadInput(unittest.TestCase):
    def test_errors_name_the_problem(self):
        rng = np.random.default_rng(1)
        w, b = rng.standard_normal((5, 7)), rng.standard_normal(5)
        st = dalr.Stats(7).add(rng.standard_normal((20, 7)))
        cases = [
            (lambda: dalr.solve(w, b, st, rank=6), "rank 6 is out of range"),
            (lambda: dalr.solve(w, b, st, rank=0), "rank 0 is out of range"),
            (lambda: dalr.solve(w, b, st), "give rank=K or keep=FRACTION"),
            (lambda: dalr.solve(w, b, st, rank=2, keep=0.5), "not both"),
            (lambda: dalr.solve(w, b, st, method="pca", rank=2), "pca"),
            (lambda: dalr.solve(w, b, st, rank=2, lam_rel=-1), "lambda-rel"),
            (lambda: dalr.solve(w[:, :6], b, st, rank=2), "activations have 7 features"),
            (lambda: dalr.solve(w, b[:4], st, rank=2), "bias has 4 values"),
            (lambda: dalr.solve(w * np.nan, b, st, rank=2), "NaN"),
            (lambda: dalr.Stats(7).add(np.ones((3, 6))), "6 features"),
            (lambda: dalr.Stats(7).add(np.ones(7)), "2 dimension"),
            (lambda: dalr.Stats(7).add(np.array([[np.nan] * 7])), "NaN"),
            (lambda: dalr.Stats(7, "fp16"), "precision"),
            (lambda: dalr.Stats(7, device="gpu"), "device must be"),
            (lambda: dalr.Stats(0), "at least 1"),
            (lambda: dalr.Stats(7).merge(dalr.Stats(8)), "merge"),
        ]
        if not dalr.cuda_available():
            cases.append((lambda: dalr.Stats(7, "fp32", "cuda"), "cuda"))
        for fn, text in cases:
            with self.assertRaises(dalr.Error, msg=text) as cm:
                fn()
            self.assertIn(text.lower(), str(cm.exception).lower())
        self.assertTrue(issubclass(dalr.Error, ValueError))


@unittest.skipIf(torch is None, "torch is not installed")
class Compress(unittest.TestCase):
    def residual_model(self):
        class Block(torch.nn.Module):
            def __init__(self, d, h):
                super().__init__()
                self.fc1, self.fc2 = torch.nn.Linear(d, h), torch.nn.Linear(h, d)

            def forward(self, x):
                return x + self.fc2(torch.relu(self.fc1(x)))

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = torch.nn.Linear(19, 24)
                self.blocks = torch.nn.ModuleList([Block(24, 41), Block(24, 33)])
                self.norm = torch.nn.LayerNorm(24)
                self.head = torch.nn.Linear(24, 7)

            def forward(self, x):
                x = self.stem(x)
                for blk in self.blocks:
                    x = blk(x)
                return self.head(self.norm(x))

        torch.manual_seed(0)
        return Net().double()

    def test_residual_model(self):
        model = self.residual_model()
        before = copy.deepcopy(model.state_dict())
        data = [torch.randn(64, 19, dtype=torch.float64) for _ in range(5)]
        ranks = {"blocks.0.fc1": 24, "blocks.1.fc2": 24, "head": 7}  # full rank: exact
        small, report = dalr.compress(model, ranks, data, method="dalr-exact", lam=0.0,
                                      progress=False)
        x = torch.randn(50, 19, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(small(x), model(x), rtol=1e-8, atol=1e-8)
        # the user's model is untouched
        self.assertEqual(set(before), set(model.state_dict()))
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        self.assertIsInstance(model.head, torch.nn.Linear)
        self.assertIsInstance(small.head, torch.nn.Sequential)
        self.assertEqual(report["head"]["layer"], {"name": "head", "m": 7, "n": 24, "had_bias": True})
        self.assertEqual(report["head"]["samples"], 5 * 64)

        # lower ranks, kept fractions, tuple batches: the state dict loads into plain modules
        small, report = dalr.compress(model, {"blocks.0.fc1": 5, "blocks.1.fc1": 0.3},
                                      [(d, 0) for d in data], progress=False)
        fresh = self.residual_model()
        fresh.blocks[0].fc1 = torch.nn.Sequential(torch.nn.Linear(24, 5, bias=False),
                                                  torch.nn.Linear(5, 41)).double()
        k = report["blocks.1.fc1"]["rank"]
        self.assertEqual(k, int(0.3 * 41 * 24 / (41 + 24)))
        fresh.blocks[1].fc1 = torch.nn.Sequential(torch.nn.Linear(24, k, bias=False),
                                                  torch.nn.Linear(k, 33)).double()
        fresh.load_state_dict(small.state_dict(), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), small(x), rtol=0, atol=0)
        # a callable that runs the model itself
        calls = []
        small2, _ = dalr.compress(model, {"head": 3}, lambda m: calls.extend(m(d) for d in data),
                                  progress=False)
        self.assertEqual(len(calls), 5)
        self.assertEqual(small2.head[0].weight.shape, (3, 24))

    def test_transformer_mlp(self):
        torch.manual_seed(1)
        layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=40,
                                                 dropout=0.0)
        data = [torch.randn(9, 4, 16) for _ in range(6)]  # (tokens, batch, d): 36 rows each
        small, report = dalr.compress(layer, {"linear1": 16, "linear2": 16}, data,
                                      method="dalr-exact", lam=0.0, progress=False)
        self.assertEqual(report["linear1"]["samples"], 6 * 36)
        x = torch.randn(9, 4, 16)
        with torch.no_grad():
            torch.testing.assert_close(small(x), layer(x), rtol=1e-4, atol=1e-4)
        self.assertEqual(small.linear1[0].weight.dtype, torch.float32)
        small, report = dalr.compress(layer, {"linear1": 6}, data, method="dalr", progress=False)
        self.assertLess(report["linear1"]["error_train"]["rel"], 1)
        self.assertEqual(small.linear1[1].weight.shape, (40, 6))

    def test_errors(self):
        model = self.residual_model()
        data = [torch.randn(8, 19, dtype=torch.float64)]
        cases = [
            ({"blocks.9.fc1": 3}, "dalr", data, "unknown module 'blocks.9.fc1'"),
            ({"norm": 3}, "dalr", data, "is a LayerNorm, not an nn.Linear"),
            ({"head": 8}, "dalr", data, "rank 8 is out of range"),
            ({"head": 1.5}, "dalr", data, "kept fraction"),
            ({"head": 3}, "prune-mean", data, "cannot be used by compress"),
            ({"head": 3}, "dalr", [data[0], data[0] * float("nan")], "batch 1"),
            ({}, "dalr", data, "non-empty"),
        ]
        for ranks, method, d, text in cases:
            with self.assertRaises(dalr.Error, msg=text) as cm:
                dalr.compress(model, ranks, d, method=method, progress=False)
            self.assertIn(text, str(cm.exception))
        self.assertTrue(model.training)  # the model's mode is restored after an error

        class Unused(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)

            def forward(self, x):
                return self.a(x)

        with self.assertRaisesRegex(dalr.Error, "'b' saw no inputs"):
            dalr.compress(Unused(), {"b": 2}, [torch.randn(4, 3)], progress=False)


@unittest.skipUnless(torch is not None and dalr.cuda_available(), "no CUDA device")
class Cuda(unittest.TestCase):
    def test_dlpack_stats_equal_host(self):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((777, 33)).astype(np.float32)
        w, b = rng.standard_normal((9, 33)).astype(np.float32), np.zeros(9, np.float32)
        gpu = dalr.Stats(33, "fp32", "cuda").add(torch.from_numpy(x).cuda())
        cpu = dalr.Stats(33, "fp32", "cpu").add(x)
        self.assertEqual(gpu.count, cpu.count)
        f1 = dalr.solve(w, b, gpu, "dalr", rank=4, device="cuda")
        f2 = dalr.solve(w, b, cpu, "dalr", rank=4)
        np.testing.assert_allclose(f1.A @ f1.B, f2.A @ f2.B, rtol=2e-3, atol=2e-4)


if __name__ == "__main__":
    print("dalr from", dalr.__file__)
    if not installed_is_current():
        print("FAIL: the installed dalr package is older than python/dalr/: "
              "rerun tools/install_python.sh")
        sys.exit(1)
    unittest.main(verbosity=1)
