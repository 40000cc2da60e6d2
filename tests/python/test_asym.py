"""The asymmetric fit in the Python package (run by test_api.py, ctest python_api).

Checks, against a NumPy float64 brute force from explicitly collected inputs X (original
network) and X^ (compressed network), patches by torch's unfold for conv layers:
  W_r = W K (C^ + lam I)^-1 with C^ = X^ X^^T, K = X X^^T, lam = lam_rel trace(C^) / n;
  dalr: A = top-k eigenvectors of W C_o W^T (C_o = X X^T); dalr-exact: of W_r (C^+lam I) W_r^T;
  A B = A A^T W_r (compared as the product: eigenvectors' signs are free), bias = b:
  * dalr.CrossStats + dalr.asymmetric_solve on fc rows and on conv feature maps (stride,
    dilation, asymmetric 'same' padding: pre-padded maps, batches of different sizes),
    with the training error against the original outputs;
  * dalr.compress(sequential="asymmetric", the default with conv layers, and True) on an
    example-like network (conv, relu, max pool, conv, relu, pool, Linear) equals the brute
    force layer by layer, each layer from its inputs in the original model and in the model
    with the earlier layers replaced by the returned factors; it differs from the symmetric
    fit and reconstructs the original outputs better; the user's model is untouched;
  * on a subset of the shipped example's training images, dalr.compress's factors of
    features.3 and features.6 are the CLI's (`dalr-gpu compress`, asymmetric by default)
    to float32 rounding, and the symmetric fit's are not;
  * bad inputs raise dalr.Error.
"""
import copy
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np

import dalr
import dalr_format as F
from test_conv import conv_net, patches

# Set by test_api.py (its command line): the CLI and the source tree.
DALR_GPU = None
SRC = None

try:
    import torch
except ImportError:
    torch = None


def asymmetric_numpy(w, x, xh, k, method, lam_rel=1e-3):
    """The brute-force asymmetric fit from samples x, xh (p, n): A B (m x n) and lam."""
    ch, k_cross, co = xh.T @ xh, x.T @ xh, x.T @ x
    n = ch.shape[0]
    lam = lam_rel * np.trace(ch) / n
    d = ch + lam * np.eye(n)
    wr = np.linalg.solve(d, (w @ k_cross).T).T  # W K D^-1 (D symmetric)
    target = w @ co @ w.T if method == "dalr" else wr @ d @ wr.T
    _, u = np.linalg.eigh(target)
    a = u[:, ::-1][:, :k]
    return a @ a.T @ wr, lam


def product(f):
    """A B of Factors (2-D or conv-shaped)."""
    a, b = np.asarray(f.A), np.asarray(f.B)
    return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1)


class AsymmetricSolve(unittest.TestCase):
    def test_fc_rows(self):
        rng = np.random.default_rng(11)
        m, n, k = 7, 11, 4
        w, b = rng.standard_normal((m, n)), rng.standard_normal(m)
        x = rng.standard_normal((301, n)) @ rng.standard_normal((n, n))
        xh = x + 0.4 * rng.standard_normal(x.shape)  # the compressed network's inputs
        hat, orig, cross = dalr.Stats(n), dalr.Stats(n), dalr.CrossStats(n)
        for j in range(0, 301, 97):  # odd batches
            hat.add(xh[j:j + 97])
            orig.add(x[j:j + 97])
            cross.add(x[j:j + 97], xh[j:j + 97])
        self.assertEqual((cross.count, cross.n), (301, n))
        for method in ("dalr", "dalr-exact"):
            f = dalr.asymmetric_solve(w, b, hat, orig, cross, method, rank=k)
            want, lam = asymmetric_numpy(w, x, xh, k, method)
            np.testing.assert_allclose(product(f), want, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(f.bias, b, rtol=0, atol=0)
            self.assertEqual((f.A.shape, f.B.shape, f.rank), ((m, k), (k, n), k))
            self.assertAlmostEqual(f.report["lambda"], lam, delta=1e-12 * lam)
            ref = x @ w.T + b
            err = np.linalg.norm(ref - (xh @ product(f).T + b))
            e = f.report["error_train"]
            self.assertAlmostEqual(e["rel"], err / np.linalg.norm(ref), delta=1e-8)
            self.assertEqual(e["samples"], 301)
        # dalr-exact is the minimiser: no worse than dalr on the asymmetric objective
        errs = [dalr.asymmetric_solve(w, b, hat, orig, cross, mth, rank=k).report["error_train"]
                ["rel"] for mth in ("dalr", "dalr-exact")]
        self.assertLessEqual(errs[1], errs[0] + 1e-12)
        # with X^ = X it is the ordinary solve
        same = dalr.CrossStats.like(orig).add(x, x)
        f = dalr.asymmetric_solve(w, b, orig, orig, same, "dalr", rank=k)
        g = dalr.solve(w, b, orig, "dalr", rank=k)
        np.testing.assert_allclose(product(f), product(g), rtol=1e-9, atol=1e-11)

    @unittest.skipIf(torch is None, "torch is not installed")
    def test_conv_maps(self):
        rng = np.random.default_rng(12)
        # (channels, kernel, stride, padding, dilation, c_out, sizes of the batches' maps)
        cases = [(3, (3, 2), 2, 1, 2, 8, [(13, 10), (13, 10), (9, 12)]),
                 (4, (2, 4), 1, "same", 1, 6, [(6, 11), (7, 9)])]  # pre-padded maps
        for c, kernel, s, pad, d, c_out, sizes in cases:
            probe = dalr.ConvStats(c, kernel, s, pad, d)
            (kh, kw), pads = probe.kernel_size, probe.padding
            w = rng.standard_normal((c_out, c, kh, kw))
            b = rng.standard_normal(c_out)
            hat, orig = (dalr.ConvStats(c, kernel, s, pad, d) for _ in range(2))
            cross = dalr.CrossStats.like(hat)
            xs, xhs = [], []
            for h, wd in sizes:
                x = rng.standard_normal((3, c, h, wd))
                xh = x + 0.5 * rng.standard_normal(x.shape) ** 2
                hat.add(xh)
                orig.add(x)
                cross.add(x, xh)
                xs.append(patches(x, (kh, kw), s, pads, d))
                xhs.append(patches(xh, (kh, kw), s, pads, d))
            x, xh = np.concatenate(xs), np.concatenate(xhs)
            self.assertEqual((cross.count, cross.images), (x.shape[0], 3 * len(sizes)))
            n = c * kh * kw
            for method, k in (("dalr", 3), ("dalr-exact", 5)):
                f = dalr.asymmetric_solve(w, b, hat, orig, cross, method, rank=k)
                self.assertEqual((f.A.shape, f.B.shape), ((c_out, k, 1, 1), (k, c, kh, kw)))
                want, _ = asymmetric_numpy(w.reshape(c_out, n), x, xh, k, method)
                np.testing.assert_allclose(product(f), want, rtol=1e-9, atol=1e-11)
                self.assertIn("flops_per_position", f.report)
            # torch tensors in, tensors out on the weight's device and dtype
            f = dalr.asymmetric_solve(torch.from_numpy(w), None, hat, orig, cross, rank=2)
            self.assertIsInstance(f.A, torch.Tensor)
            self.assertFalse(f.report["layer"]["had_bias"])


def example_net():
    """The shipped example's shape (examples/fashion2digits), smaller: conv, relu, max
    pool, conv, relu, max pool, flatten, Linear."""
    torch.manual_seed(5)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(12 * 4 * 4, 10)).double()


def layer_inputs(model, name, data):
    """Layer `name`'s inputs over data: conv patches or fc rows (float64 NumPy)."""
    mod = model.get_submodule(name)
    got = []
    h = mod.register_forward_hook(lambda _m, i, _o: got.append(i[0].detach()))
    with torch.no_grad():
        for x in data:
            model(x)
    h.remove()
    if isinstance(mod, torch.nn.Conv2d):
        return np.concatenate([patches(t.numpy(), mod.kernel_size, mod.stride[0],
                                       mod.padding[0], mod.dilation[0]) for t in got])
    return np.concatenate([t.reshape(-1, mod.in_features).numpy() for t in got])


@unittest.skipIf(torch is None, "torch is not installed")
class CompressAsymmetric(unittest.TestCase):
    def data(self, seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.rand(7, 1, 16, 16, generator=g, dtype=torch.float64) for _ in range(5)]

    def test_equals_brute_force(self):
        model, data = example_net(), self.data(1)
        before = copy.deepcopy(model.state_dict())
        ranks = {"7": 5, "3": 4, "0": 3}  # not in forward order
        order = ["0", "3", "7"]
        for method in ("dalr", "dalr-exact"):
            small, rep = dalr.compress(model, ranks, data, method=method, progress=False)
            again, _ = dalr.compress(model, ranks, data, method=method, sequential=True,
                                     progress=False)
            for name in order:
                self.assertEqual(rep[name]["sequential"], "asymmetric")
                torch.testing.assert_close(small.get_submodule(name)[0].weight,
                                           again.get_submodule(name)[0].weight, rtol=0, atol=0)
            for i, name in enumerate(order):
                part = copy.deepcopy(model)  # the earlier layers replaced by the result's
                for done in order[:i]:
                    part[int(done)] = copy.deepcopy(small.get_submodule(done))
                x, xh = layer_inputs(model, name, data), layer_inputs(part, name, data)
                w = model.get_submodule(name).weight.detach().numpy()
                want, _ = asymmetric_numpy(w.reshape(w.shape[0], -1), x, xh, ranks[name], method)
                seq = small.get_submodule(name)
                got = (seq[1].weight.detach().numpy().reshape(w.shape[0], -1)
                       @ seq[0].weight.detach().numpy().reshape(ranks[name], -1))
                np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10, err_msg=name)
                torch.testing.assert_close(seq[1].bias, model.get_submodule(name).bias)
                if i > 0:  # a compressed upstream: X^ differs from X
                    self.assertGreater(np.abs(x - xh).max(), 1e-3)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)

    def test_better_than_symmetric(self):
        model, data = example_net(), self.data(2)
        ranks = {"0": 2, "3": 3, "7": 4}
        held = self.data(3)
        with torch.no_grad():
            ref = torch.cat([model(x) for x in held])
        errs = {}
        for mode in ("asymmetric", "symmetric"):
            small, rep = dalr.compress(model, ranks, data, sequential=mode, progress=False)
            self.assertEqual(rep["7"]["sequential"], mode)
            with torch.no_grad():
                out = torch.cat([small(x) for x in held])
            errs[mode] = ((out - ref).norm() / ref.norm()).item()
        self.assertLess(errs["asymmetric"], errs["symmetric"])

    def test_callable_data_and_svd(self):
        model, data = conv_net(), [torch.randn(4, 3, 15, 14, dtype=torch.float64)
                                   for _ in range(3)]
        ranks = {"conv2": 4, "conv3": 3}
        a, _ = dalr.compress(model, ranks, data, progress=False)
        b, _ = dalr.compress(model, ranks, lambda m: [m(x) for x in data], progress=False)
        for name in ranks:
            torch.testing.assert_close(a.get_submodule(name)[0].weight,
                                       b.get_submodule(name)[0].weight, rtol=0, atol=0)
        # svd fits no data: the same in both modes, reported symmetric
        s1, rep = dalr.compress(model, ranks, data, method="svd", progress=False)
        s2, _ = dalr.compress(model, ranks, data, method="svd", sequential="symmetric",
                              progress=False)
        self.assertEqual(rep["conv3"]["sequential"], "symmetric")
        torch.testing.assert_close(s1.conv3[0].weight, s2.conv3[0].weight, rtol=0, atol=0)


@unittest.skipIf(torch is None, "torch is not installed")
class ExampleEqualsCli(unittest.TestCase):
    def test_shipped_example(self):
        if DALR_GPU is None:
            self.skipTest("run by test_api.py, which names the CLI")
        from PIL import Image
        ex = os.path.join(SRC, "examples", "fashion2digits")
        ranks = {"features.3": 5, "features.6": 5}
        with tempfile.TemporaryDirectory() as d:
            sub = os.path.join(d, "train")
            for c in sorted(os.listdir(os.path.join(ex, "train"))):  # 13 images a class
                os.makedirs(os.path.join(sub, c))
                for f in sorted(os.listdir(os.path.join(ex, "train", c)))[:13]:
                    shutil.copy(os.path.join(ex, "train", c, f), os.path.join(sub, c, f))
            out = os.path.join(d, "small.bin")
            r = subprocess.run([DALR_GPU, "compress", "--model", os.path.join(ex, "model.bin"),
                                "--acts", "stream", "--data", sub, "--layer",
                                "features.3,features.6", "--rank", "5", "--device", "cpu", "-q",
                                "--out", out], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            tensors, arch, inp, meta = F.read_bin(os.path.join(ex, "model.bin"))
            model = F.module_from_arch(arch, tensors)
            items, _ = F.list_image_folder(sub, F.model_classes(meta), 10)
            x = torch.from_numpy(np.stack([F.preprocess_image(Image.open(p), inp)
                                           for p, _ in items]))
            cli_factors = F.read_bin(out)[0]
        data = [x[i:i + 32] for i in range(0, len(x), 32)]
        diffs = {}
        for mode in ("asymmetric", "symmetric"):
            small, _ = dalr.compress(model, ranks, data, sequential=mode, progress=False)
            for name, k in ranks.items():
                a = np.asarray(cli_factors[name + ".1.weight"], np.float64).reshape(-1, k)
                b = np.asarray(cli_factors[name + ".0.weight"], np.float64).reshape(k, -1)
                seq = small.get_submodule(name)
                got = (seq[1].weight.detach().double().numpy().reshape(-1, k)
                       @ seq[0].weight.detach().double().numpy().reshape(k, -1))
                diffs[mode, name] = np.linalg.norm(got - a @ b) / np.linalg.norm(a @ b)
        self.assertLess(diffs["asymmetric", "features.3"], 1e-5)  # the first: as any fit
        self.assertLess(diffs["asymmetric", "features.6"], 1e-5)
        self.assertGreater(diffs["symmetric", "features.6"], 1e-3)


class AsymmetricErrors(unittest.TestCase):
    def test_solve_refuses(self):
        rng = np.random.default_rng(13)
        w, x = rng.standard_normal((4, 6)), rng.standard_normal((20, 6))
        hat, orig, cross = dalr.Stats(6).add(x), dalr.Stats(6).add(x), dalr.CrossStats(6)
        with self.assertRaisesRegex(dalr.Error, "count different samples"):
            dalr.asymmetric_solve(w, None, hat, orig, cross, rank=2)
        cross.add(x, x)
        with self.assertRaisesRegex(dalr.Error, "dalr and dalr-exact, not svd"):
            dalr.asymmetric_solve(w, None, hat, orig, cross, "svd", rank=2)
        with self.assertRaisesRegex(dalr.Error, "needs lambda > 0"):
            dalr.asymmetric_solve(w, None, hat, orig, cross, rank=2, lam=0.0)
        with self.assertRaisesRegex(dalr.Error, "weight takes 5 inputs"):
            dalr.asymmetric_solve(w[:, :5], None, hat, orig, cross, rank=2)
        with self.assertRaisesRegex(dalr.Error, "width or precision"):
            dalr.asymmetric_solve(w, None, hat, orig, dalr.CrossStats(6, "fp32").add(x, x),
                                  rank=2)
        with self.assertRaisesRegex(dalr.Error, "cross must be a dalr.CrossStats"):
            dalr.asymmetric_solve(w, None, hat, orig, orig, rank=2)
        conv = dalr.ConvStats(6, 1)
        with self.assertRaisesRegex(dalr.Error, "same layer"):
            dalr.asymmetric_solve(w, None, conv, orig, cross, rank=2)
        with self.assertRaisesRegex(dalr.Error, "differ in shape"):
            cross.add(x, x[:19])
        with self.assertRaisesRegex(dalr.Error, "features"):
            cross.add(x[:, :5], x[:, :5])
        with self.assertRaisesRegex(dalr.Error, "must have 2 dimension"):
            cross.add(x[None], x[None])
        maps = rng.standard_normal((2, 6, 3, 3))
        cc = dalr.CrossStats.like(conv)
        with self.assertRaisesRegex(dalr.Error, "channels"):
            cc.add(maps[:, :5], maps[:, :5])
        with self.assertRaisesRegex(dalr.Error, "must be an int"):
            dalr.CrossStats(2.5)
        with self.assertRaisesRegex(dalr.Error, "at least 1"):
            dalr.CrossStats(0)

    @unittest.skipIf(torch is None, "torch is not installed")
    def test_compress_refuses(self):
        model = conv_net()
        data = [torch.randn(2, 3, 15, 14, dtype=torch.float64)]
        ranks = {"conv2": 4, "conv3": 3}
        with self.assertRaisesRegex(dalr.Error, "sequential must be"):
            dalr.compress(model, ranks, data, sequential="both", progress=False)
        with self.assertRaisesRegex(dalr.Error, "needs lam > 0"):
            dalr.compress(model, ranks, data, lam=0.0, progress=False)
        dalr.compress(model, ranks, data, lam=0.0, sequential="symmetric", progress=False)


if __name__ == "__main__":
    unittest.main()
