"""mbengine: MobileBERT inference on Numba kernels."""

__version__ = "0.1.0"
