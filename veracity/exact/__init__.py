"""Exact arithmetic: the same model on the same data gives the same bits on any machine.

Pure: arrays in, arrays and hashes out (the one exception: the native kernels are compiled once
into a cache). See ``spec`` for the integer formats,
``ops_torch`` / ``ops_numpy`` for the two backends and ``trace`` for commitments.
"""
