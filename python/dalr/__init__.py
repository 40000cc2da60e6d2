"""dalr: data-aware low-rank compression of linear and conv layers (DALR, Masana et al.,
ICCV 2017).

The engine of the ``dalr-gpu`` command line as a Python package:

* ``Stats``: the streaming statistics of one layer's inputs (C = sum x x^T and the
  per-unit sums), fed with NumPy arrays or torch tensors of shape (batch, n); CUDA
  tensors go to the GPU accumulator through DLPack without a host copy.
* ``ConvStats``: the same for a conv layer's input patches, fed with feature maps
  (images, C, H, W) without materialising the patch matrix.
* ``solve``: one layer's factors (A, B, bias) by any of the CLI's methods (a 4-D conv
  weight gives conv-shaped factors).
* ``CrossStats`` and ``asymmetric_solve``: the asymmetric fit of sequential compression
  (the layer fitted from its inputs in the compressed network to the original network's
  outputs; the CLI's ``--sequential asymmetric``).
* ``compress``: an ``nn.Module`` in, a copy out with each named ``nn.Linear`` replaced by
  ``nn.Sequential(nn.Linear(n, k, bias=False), nn.Linear(k, m))`` and each named
  ``nn.Conv2d`` by ``nn.Sequential(nn.Conv2d(c_in, k, kernel, ..., bias=False),
  nn.Conv2d(k, c_out, 1))``.

Errors the user can act on raise ``dalr.Error`` (a ``ValueError``) with the CLI's messages.
"""
from ._api import Error, Factors, Stats, cuda_available, methods, solve
from ._asym import CrossStats, asymmetric_solve
from ._conv import ConvStats
from ._torch import compress

__all__ = ["ConvStats", "CrossStats", "Error", "Factors", "Stats", "asymmetric_solve", "compress",
           "cuda_available", "methods", "solve"]
__version__ = "0.1.0"
