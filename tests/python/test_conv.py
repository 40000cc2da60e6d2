"""Conv layers in the Python package (run by test_api.py, ctest python_api).

Checks, against computations that do not use dalr's patch code (torch's unfold for the
patches, NumPy for the Gram matrices, the eigenvectors and the ridge solve):
  * dalr.ConvStats' statistics equal those of the explicit patch matrix (stride 2,
    padding, dilation, non-square kernels, asymmetric and 'same' padding, batches of
    different sizes, the relu outputs' statistics);
  * dalr.solve on a 4-D weight is DALR on the explicit patches;
  * dalr.compress replaces nn.Conv2d by Sequential(Conv2d, Conv2d 1x1) that is exact at
    full rank and equals the NumPy factors at low rank; sequential compression (the
    default for conv layers) equals compressing one layer after the other by hand and
    differs from independent compression; a residual network compresses and its
    state_dict loads into plain modules;
  * bad convolutions and bad batches raise dalr.Error naming the problem.
"""
import copy
import os
import tempfile
import unittest

import numpy as np

import dalr
import dalr_format as F

try:
    import torch
    import torch.nn.functional as TF
except ImportError:
    torch = None


def patches(x, kernel, stride=1, padding=0, dilation=1):
    """The patch matrix (images * positions, c kh kw) of maps x (N, C, H, W), rows in the
    order image, then output position; padding: an int, a pair or (top, bottom, left,
    right)."""
    t = torch.as_tensor(x, dtype=torch.float64)
    if isinstance(padding, tuple) and len(padding) == 4:
        top, bottom, left, right = padding
        t, padding = TF.pad(t, (left, right, top, bottom)), 0
    p = TF.unfold(t, kernel, dilation=dilation, padding=padding, stride=stride)  # (N, n, L)
    return p.permute(0, 2, 1).reshape(-1, p.shape[1]).numpy()


def saved(stats):
    """The statistics' tensors as the CLI's file holds them (gram, sum_x, max_x, ...)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.stats")
        stats.save(path)
        header, meta, base = F.read_header(path)  # read_safetensors gives float32
        with open(path, "rb") as f:
            raw = f.read()
    tensors = {}
    for name, info in header.items():
        dtype = {"F64": "<f8", "F32": "<f4"}[info["dtype"]]
        b, e = info["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + b:base + e], dtype).reshape(info["shape"])
    g = tensors["gram"]
    tensors["gram"] = np.tril(g) + np.tril(g, -1).T  # the lower triangle is the result
    return tensors, meta


def dalr_numpy(w, b, x, k, lam_rel=1e-3):
    """DALR (DESIGN.md, paper Eq. 7-11) on explicit samples x (p, n): A = top-k
    eigenvectors of W C W^T, B = A^T W C (C + lam I)^-1, lam = lam_rel trace(C) / n."""
    c = x.T @ x
    lam = lam_rel * np.trace(c) / c.shape[0]
    _, u = np.linalg.eigh(w @ c @ w.T)
    a = u[:, ::-1][:, :k]
    bmat = np.linalg.solve(c + lam * np.eye(c.shape[0]), (a.T @ w @ c).T).T
    return a, bmat, b


@unittest.skipIf(torch is None, "torch is not installed")
class ConvStatistics(unittest.TestCase):
    # (channels, kernel, stride, padding, dilation, H, W): odd sizes
    GEOMETRIES = [
        (3, (3, 2), 2, 1, 2, 13, 10),          # stride 2, padding, dilation, non-square
        (2, (1, 3), 1, (0, 2), 1, 7, 9),       # a padding pair: pre-padded maps
        (4, (2, 4), 1, "same", 1, 6, 11),      # even kernel 'same': asymmetric padding
        (5, 3, 3, "valid", 1, 11, 11),
        (1, (5, 1), 2, (2, 0), 3, 17, 4),
    ]

    def test_statistics_equal_explicit_patches(self):
        rng = np.random.default_rng(21)
        for c, kernel, stride, padding, dil, h, w in self.GEOMETRIES:
            with self.subTest(kernel=kernel, stride=stride, padding=padding, dilation=dil):
                x = rng.standard_normal((3, c, h, w)) + 0.3
                st = dalr.ConvStats(c, kernel, stride, padding, dil)
                st.add(x[:2]).add(torch.from_numpy(x[2:]).float())  # torch fp32 converts
                pad = dalr._conv.conv_geometry(kernel, stride, padding, dil)[4]
                xs = patches(np.concatenate([x[:2], x[2:].astype(np.float32)]), st.kernel_size,
                             stride, pad, dil)
                self.assertEqual((st.images, st.count, st.n), (3, xs.shape[0], xs.shape[1]))
                t, meta = saved(st)
                self.assertEqual(int(meta["dalr.count"]), xs.shape[0])
                np.testing.assert_allclose(t["gram"], xs.T @ xs, rtol=1e-12, atol=1e-10)
                np.testing.assert_allclose(t["sum_x"], xs.sum(0), rtol=1e-12, atol=1e-10)
                np.testing.assert_array_equal(t["max_x"], xs.max(0))
                # the geometry of the layer: the same patches as torch's own convolution
                conv = torch.nn.Conv2d(c, 2, kernel, stride, padding, dil, bias=False).double()
                y = conv(torch.from_numpy(x[:1])).detach().numpy()
                wm = conv.weight.detach().numpy().reshape(2, -1)
                np.testing.assert_allclose((patches(x[:1], st.kernel_size, stride, pad, dil)
                                            @ wm.T).T.reshape(y.shape), y, rtol=1e-12,
                                           atol=1e-12)

    def test_batches_of_different_sizes_and_outputs(self):
        rng = np.random.default_rng(5)
        c, m = 3, 7
        w, b = rng.standard_normal((m, c, 3, 3)), rng.standard_normal(m)
        st = dalr.ConvStats(c, 3, 2, 1, weight=torch.from_numpy(w), bias=b)
        rows = []
        for h, wd in ((9, 11), (12, 7), (12, 7), (9, 11), (5, 5)):
            x = np.abs(rng.standard_normal((2, c, h, wd)))
            st.add(x)
            rows.append(patches(x, (3, 3), 2, 1))
        xs = np.concatenate(rows)
        t, _ = saved(st)
        self.assertEqual((st.images, st.count), (10, xs.shape[0]))
        np.testing.assert_allclose(t["gram"], xs.T @ xs, rtol=1e-12, atol=1e-10)
        y = np.maximum(xs @ w.reshape(m, -1).T + b, 0)  # the relu outputs, per patch
        np.testing.assert_allclose(t["sum_y"], y.sum(0), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(t["max_y"], y.max(0), rtol=1e-12)
        # pruning keeps the filters of largest mean relu output
        f = dalr.solve(w, b, st, "prune-mean", rank=3)
        self.assertEqual(sorted(f.kept_units), sorted(np.argsort(-y.mean(0))[:len(f.kept_units)]))
        self.assertEqual(f.B.shape, (len(f.kept_units), c, 3, 3))
        # saved statistics load as plain Stats and merge into ConvStats of the same patches
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.stats")
            dalr.ConvStats(c, 3, 2, 1).add(x).save(path)
            both = dalr.ConvStats(c, 3, 2, 1).add(x).merge(dalr.Stats.load(path))
        np.testing.assert_allclose(saved(both)[0]["gram"], 2 * (rows[-1].T @ rows[-1]),
                                   rtol=1e-12)

    def test_solve_is_dalr_on_explicit_patches(self):
        rng = np.random.default_rng(9)
        c, m, k = 4, 11, 3
        x = np.maximum(rng.standard_normal((6, c, 10, 9)), 0)
        w, b = rng.standard_normal((m, c, 2, 3)), rng.standard_normal(m)
        st = dalr.ConvStats(c, (2, 3), stride=2, padding=(1, 2), dilation=2).add(x)
        f = dalr.solve(torch.from_numpy(w), torch.from_numpy(b), st, "dalr", rank=k)
        self.assertEqual(tuple(f.B.shape), (k, c, 2, 3))
        self.assertEqual(tuple(f.A.shape), (m, k, 1, 1))
        self.assertIsInstance(f.A, torch.Tensor)
        xs = patches(x, (2, 3), 2, (1, 1, 2, 2), 2)
        a, bm, bias = dalr_numpy(w.reshape(m, -1), b, xs, k)
        got = f.A.numpy().reshape(m, k) @ f.B.numpy().reshape(k, -1)
        np.testing.assert_allclose(got, a @ bm, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(f.bias.numpy(), bias, rtol=0, atol=0)
        self.assertEqual(f.report["flops_per_position"],
                         {"before": m * c * 6, "after": k * (c * 6 + m),
                          "kept_fraction": k * (c * 6 + m) / (m * c * 6)})
        self.assertEqual(f.report["samples"], xs.shape[0])
        # the same solve from the explicit patches' statistics (dalr.Stats): the same factors
        g = dalr.solve(w.reshape(m, -1), b, dalr.Stats(c * 6).add(xs), "dalr", rank=k)
        np.testing.assert_allclose(g.A @ g.B, got, rtol=1e-9, atol=1e-11)


def conv_net():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 10, (3, 2), stride=2, padding=1, dilation=2)
            self.conv2 = torch.nn.Conv2d(10, 12, 3, padding="same")
            self.conv3 = torch.nn.Conv2d(12, 9, (2, 4), padding="same", bias=False)
            self.head = torch.nn.Linear(9, 5)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = torch.relu(self.conv3(x))
            return self.head(x.mean((2, 3)))

    torch.manual_seed(3)
    return Net().double()


def res_net():
    class Block(torch.nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(c_out)
            self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(c_out)
            self.down = torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.down(x))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.layer1 = Block(8, 13, 2)
            self.fc = torch.nn.Linear(13, 6)

        def forward(self, x):
            x = self.layer1(torch.relu(self.stem(x)))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(4)
    net = Net().double()
    for m in net.modules():  # batchnorm that is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2)
    return net


@unittest.skipIf(torch is None, "torch is not installed")
class CompressConv(unittest.TestCase):
    def data(self, seed=0, n=4):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(5, 3, 15, 14, generator=g, dtype=torch.float64) for _ in range(n)]

    def test_full_rank_is_exact(self):
        model = conv_net()
        before = copy.deepcopy(model.state_dict())
        ranks = {"conv1": 10, "conv2": 12, "conv3": 9}  # min(c_out, c_in kh kw)
        small, report = dalr.compress(model, ranks, self.data(), method="svd", progress=False)
        x = torch.randn(3, 3, 15, 14, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(small(x), model(x), rtol=1e-10, atol=1e-10)
            for name in ranks:  # layer by layer too
                conv, seq = model.get_submodule(name), small.get_submodule(name)
                x1 = torch.randn(2, conv.in_channels, 11, 8, dtype=torch.float64)
                torch.testing.assert_close(seq(x1), conv(x1), rtol=1e-10, atol=1e-10)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        self.assertIsInstance(model.conv1, torch.nn.Conv2d)
        c1 = small.conv1
        self.assertEqual((c1[0].kernel_size, c1[0].stride, c1[0].padding, c1[0].dilation),
                         ((3, 2), (2, 2), (1, 1), (2, 2)))
        self.assertIsNone(c1[0].bias)
        self.assertEqual((small.conv3[0].padding, small.conv3[1].kernel_size), ("same", (1, 1)))
        torch.testing.assert_close(small.conv3[1].bias, torch.zeros(9, dtype=torch.float64))
        rep = report["conv1"]
        self.assertEqual(rep["layer"], {"name": "conv1", "m": 10, "n": 18, "had_bias": True,
                                        "kind": "conv2d", "kernel_size": [3, 2], "stride": [2, 2],
                                        "dilation": [2, 2], "padding": [1, 1]})
        self.assertEqual(report["conv3"]["layer"]["padding"], "same")
        positions = ((15 + 2 - 4 - 1) // 2 + 1) * ((14 + 2 - 2 - 1) // 2 + 1)
        self.assertEqual(rep["samples"], 4 * 5 * positions)
        self.assertEqual(rep["flops_per_position"]["after"], 10 * (18 + 10))
        self.assertTrue(rep["sequential"])

    def test_low_rank_equals_numpy(self):
        model = conv_net()
        data = self.data(1)
        small, _ = dalr.compress(model, {"conv2": 4}, data, method="dalr", progress=False)
        with torch.no_grad():  # conv2's inputs, by the model's own layers
            maps = [torch.relu(model.conv1(x)).numpy() for x in data]
        xs = np.concatenate([patches(x, (3, 3), 1, 1) for x in maps])
        w = model.conv2.weight.detach().numpy().reshape(12, -1)
        a, bm, bias = dalr_numpy(w, model.conv2.bias.detach().numpy(), xs, 4)
        got = (small.conv2[1].weight.detach().numpy().reshape(12, 4)
               @ small.conv2[0].weight.detach().numpy().reshape(4, -1))
        np.testing.assert_allclose(got, a @ bm, rtol=1e-8, atol=1e-10)
        # and the compressed layer's output is that of the explicit patches
        y = small.conv2(torch.from_numpy(maps[0])).detach().numpy()
        want = (patches(maps[0], (3, 3), 1, 1) @ (a @ bm).T + bias).reshape(5, -1, 12)
        np.testing.assert_allclose(y, want.transpose(0, 2, 1).reshape(y.shape), rtol=1e-9,
                                   atol=1e-10)

    def test_sequential(self):
        # symmetric (the asymmetric default: tests/python/test_asym.py)
        model, data = conv_net(), self.data(2)
        ranks = {"conv3": 3, "conv2": 4}  # not in forward order
        seq, rep = dalr.compress(model, ranks, data, sequential="symmetric", progress=False)
        self.assertEqual(rep["conv3"]["sequential"], "symmetric")
        ind, rep = dalr.compress(model, ranks, data, sequential=False, progress=False)
        self.assertFalse(rep["conv3"]["sequential"])
        # by hand: conv2 on the original model, then conv3 on the model with conv2 replaced
        step, _ = dalr.compress(model, {"conv2": 4}, data, progress=False)
        step, _ = dalr.compress(step, {"conv3": 3}, data, progress=False)
        alone, _ = dalr.compress(model, {"conv3": 3}, data, progress=False)
        for i in (0, 1):
            for a, b in ((seq.conv2[i], step.conv2[i]), (seq.conv3[i], step.conv3[i]),
                         (ind.conv3[i], alone.conv3[i]), (ind.conv2[i], seq.conv2[i])):
                torch.testing.assert_close(a.weight, b.weight, rtol=1e-12, atol=1e-12)
        prod = lambda s: (s[1].weight.reshape(9, 3) @ s[0].weight.reshape(3, -1)).detach()  # noqa
        diff = (prod(seq.conv3) - prod(ind.conv3)).norm() / prod(ind.conv3).norm()
        self.assertGreater(diff.item(), 1e-3)  # conv3 saw conv2's compressed outputs
        # one data pass per layer: a callable is called once per layer, a generator refused
        calls = []
        dalr.compress(model, ranks, lambda m: calls.extend(m(x) for x in data), progress=False)
        self.assertEqual(len(calls), 2 * len(data))
        with self.assertRaisesRegex(dalr.Error, "not an iterator or generator"):
            dalr.compress(model, ranks, (x for x in data), progress=False)
        dalr.compress(model, ranks, (x for x in data), sequential=False, progress=False)

    def test_residual_network(self):
        model = res_net()
        data = [(torch.randn(8, 3, 17, 13, dtype=torch.float64), 0) for _ in range(3)]
        convs = {"stem": 8, "layer1.conv1": 13, "layer1.conv2": 13, "layer1.down.0": 8,
                 "fc": 6}
        small, report = dalr.compress(model, convs, data, method="dalr-exact", lam=0.0,
                                      sequential="symmetric", progress=False)
        self.assertTrue(model.training and small.training)  # the user's mode, kept
        x = torch.randn(2, 3, 17, 13, dtype=torch.float64)
        with torch.no_grad():  # exact on the data's distribution: eval mode, as compressed
            torch.testing.assert_close(small.eval()(x), model.eval()(x), rtol=1e-8, atol=1e-8)
        model.train()
        self.assertEqual(report["fc"]["layer"], {"name": "fc", "m": 6, "n": 13, "had_bias": True})
        # low ranks: the state dict loads into plain modules
        ranks = {"layer1.conv2": 5, "layer1.conv1": 0.4, "stem": 2}
        small, report = dalr.compress(model, ranks, data, progress=False)
        k1 = report["layer1.conv1"]["rank"]
        self.assertEqual(k1, int(0.4 * 13 * 72 / (13 + 72)))
        fresh = res_net()
        fresh.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1, bias=False),
                                         torch.nn.Conv2d(2, 8, 1))
        fresh.layer1.conv1 = torch.nn.Sequential(torch.nn.Conv2d(8, k1, 3, 2, 1, bias=False),
                                                 torch.nn.Conv2d(k1, 13, 1))
        fresh.layer1.conv2 = torch.nn.Sequential(torch.nn.Conv2d(13, 5, 3, 1, 1, bias=False),
                                                 torch.nn.Conv2d(5, 13, 1))
        fresh.double().load_state_dict(small.state_dict(), strict=True)
        self.assertTrue(model.training and small.training)  # the user's mode, kept
        fresh.eval(), small.eval(), model.eval()
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), small(x), rtol=0, atol=0)
            rel = (small(x) - model(x)).norm() / model(x).norm()
        self.assertLess(rel.item(), 1.0)

    def test_fp32_model(self):
        model = conv_net().float()
        data = [x.float() for x in self.data(3)]
        small, rep = dalr.compress(model, {"conv2": 12}, data, method="svd", precision="fp32",
                                   progress=False)
        self.assertEqual(small.conv2[0].weight.dtype, torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(small(data[0]), model(data[0]), rtol=1e-4, atol=1e-5)


@unittest.skipIf(torch is None, "torch is not installed")
class ConvErrors(unittest.TestCase):
    def test_compress_refuses(self):
        def net(**kw):
            return torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, **kw), torch.nn.ReLU())

        data = [torch.randn(2, 4, 9, 9)]
        cases = [
            (net(groups=2), {"0": 2}, "groups=2"),
            (net(padding=1, padding_mode="reflect"), {"0": 2}, "padding_mode='reflect'"),
            (net(stride=(1, 2)), {"0": 2}, "one stride and one dilation"),
            (net(dilation=(2, 1)), {"0": 2}, "one stride and one dilation"),
            (net(), {"0": 7}, "rank 7 is out of range"),
            (net(), {"1": 2}, "is a ReLU, not an nn.Linear or nn.Conv2d"),
            (torch.nn.Sequential(torch.nn.Conv1d(4, 6, 3)), {"0": 2}, "Conv1d"),
            (net(), {"9": 2}, "its nn.Linear and nn.Conv2d modules: 0"),
        ]
        for model, ranks, text in cases:
            with self.assertRaises(dalr.Error, msg=text) as cm:
                dalr.compress(model, ranks, data, progress=False)
            self.assertIn(text, str(cm.exception))
        bad = [torch.randn(2, 4, 9, 9), torch.randn(2, 4, 9, 9) * float("nan")]
        with self.assertRaisesRegex(dalr.Error, "batch 1, module '0'.*NaN"):
            dalr.compress(net(), {"0": 2}, bad, progress=False)

    def test_stats_and_solve_refuse(self):
        st = dalr.ConvStats(3, (3, 2), padding=1)
        maps = np.ones((2, 3, 5, 6))
        cases = [
            (lambda: st.add(np.ones((2, 4, 5, 6))), "4 channels, the convolution takes 3"),
            (lambda: st.add(np.ones((3, 5, 6))), "4 dimension"),
            (lambda: dalr.ConvStats(3, (3, 2)).add(np.ones((2, 3, 2, 6))), "kernel spans 3 x 2"),
            (lambda: st.add(np.full((1, 3, 5, 6), np.inf)), "Inf"),
            (lambda: dalr.ConvStats(3, 3, padding="full"), "'valid' or 'same'"),
            (lambda: dalr.ConvStats(3, 3, stride=2, padding="same"), "needs stride 1"),
            (lambda: dalr.ConvStats(3, (3, 0)), "kernel_size must be at least 1"),
            (lambda: dalr.ConvStats(3, 3, padding=-1), "padding must be at least 0"),
            (lambda: dalr.ConvStats(3, 3, stride=1.5), "stride must be an int"),
            (lambda: dalr.ConvStats(0, 3), "channels must be an int >= 1"),
            (lambda: dalr.ConvStats(3, 3, weight=np.ones((4, 3, 2, 3))), "does not match"),
            (lambda: dalr.Stats(18).add(maps), "2 dimension"),
            (lambda: dalr.solve(np.ones((4, 2, 3, 2)), None, dalr.ConvStats(3, (3, 2)).add(maps),
                                rank=2), "does not match the statistics' 3 channels"),
            (lambda: dalr.solve(np.ones((4, 18, 1)), None, dalr.ConvStats(3, (3, 2)).add(maps),
                                rank=2), "2 dimensions (m, n) or 4"),
            (lambda: dalr.solve(np.ones((4, 3, 3, 3)), None, dalr.Stats(18).add(np.ones((5, 18))),
                                rank=2), "activations have 18 features"),
        ]
        for fn, text in cases:
            with self.assertRaises(dalr.Error, msg=text) as cm:
                fn()
            self.assertIn(text.lower(), str(cm.exception).lower())
        self.assertEqual(st.count, 0)  # nothing was counted from the refused batches
        st.add(maps)
        self.assertEqual((st.images, st.count), (2, 2 * 5 * 7))  # (5 + 2 - 3 + 1) x (6 + 2 - 2 + 1)


@unittest.skipUnless(torch is not None and dalr.cuda_available(), "no CUDA device")
class ConvCuda(unittest.TestCase):
    def test_cuda_maps_equal_host(self):
        rng = np.random.default_rng(6)
        x = rng.standard_normal((5, 6, 13, 11)).astype(np.float32)
        w = rng.standard_normal((9, 6, 3, 2)).astype(np.float32)
        gpu = dalr.ConvStats(6, (3, 2), 2, (1, 2), 1, "fp32", "cuda").add(torch.from_numpy(x).cuda())
        cpu = dalr.ConvStats(6, (3, 2), 2, (1, 2), 1, "fp32", "cpu").add(x)
        self.assertEqual((gpu.count, gpu.images), (cpu.count, cpu.images))
        f1 = dalr.solve(w, None, gpu, "dalr", rank=4, device="cuda")
        f2 = dalr.solve(w, None, cpu, "dalr", rank=4)
        prod = lambda f: f.A.reshape(9, 4) @ f.B.reshape(4, -1)  # noqa: E731
        np.testing.assert_allclose(prod(f1), prod(f2), rtol=2e-3, atol=2e-4)
