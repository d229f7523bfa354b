"""Triton kernels for livegen's hot paths, each beside a plain-torch reference.

Each kernel file holds a private ``@triton.jit`` kernel, a public launcher that
checks device, dtype and contiguity, and a ``*_ref`` in plain torch; dispatch
picks Triton on CUDA and the reference elsewhere.
"""
