"""Numba compilation switches, kept in one place.

FASTMATH allows reassociation (needed for LLVM to vectorise dot products into
several register accumulators) but deliberately leaves out ``nnan``/``ninf``:
the attention softmax relies on very negative mask values behaving like IEEE
numbers, and bad inputs must stay visible as NaN/Inf rather than be optimised
away.
"""

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # numba wants a set (not frozenset)
