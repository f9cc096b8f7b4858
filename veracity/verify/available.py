"""Output data availability: a chunk of a committed output, asked for on chain and served with its
proofs (``OutputFaults.request_chunk`` / ``serve_chunk``).

A result's output root commits to its output tensors' digests, and each digest to the tensor's
chunk tree (``exact.trace``). Anyone but the provider may ask for one chunk of one output; it
must be posted on chain, proven against the output root, before a deadline, or the provider
loses. ``serve_args`` builds the call from the output tensors; ``asked_chunks`` picks the chunks
a client samples; ``chunk_counts`` says how many chunks each output has, from the program.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from veracity.exact import merkle
from veracity.exact import program as prog
from veracity.exact.trace import (
    CODE_DTYPES,
    DTYPE_CODES,
    canonical,
    chunk_leaf,
    chunking,
    outputs_tree,
    tensor_chunks,
    tensor_digest,
)

SAMPLE = 4  # chunks a client asks for when a provider does not serve its outputs


@dataclass(frozen=True)
class ServedChunk:
    """What ``serve_chunk`` takes after the order, output and chunk."""

    count: int
    tree: bytes
    leaf_proof: list[bytes]
    dtype: int
    dims: list[int]
    chunk_root: bytes
    data: bytes
    chunk_proof: list[bytes]

    def args(self, order_id: int, output: int, chunk: int) -> tuple:
        return (order_id, output, chunk, self.count, self.tree, self.leaf_proof, self.dtype, self.dims,
                self.chunk_root, self.data, self.chunk_proof)


def serve_args(tensors: list[np.ndarray], output: int, chunk: int) -> ServedChunk:
    """The proofs that serve chunk ``chunk`` of output ``output`` of a result whose output tensors
    are ``tensors`` (in output order). A request that names no such output or chunk is answered
    with no data (the contract checks that it names none)."""
    digests = [tensor_digest(t) for t in tensors]
    tree = outputs_tree(digests)
    if output >= len(tensors):
        return ServedChunk(len(tensors), tree, [], 1, [1], bytes(32), b"", [])
    t = canonical(tensors[output])
    chunks = tensor_chunks(t)
    leaves = merkle.levels([chunk_leaf(c) for c in chunks])
    data, proof = (bytes(chunks[chunk]), merkle.prove(leaves, chunk)) if chunk < len(chunks) else (b"", [])
    return ServedChunk(len(tensors), tree, merkle.prove(merkle.levels(digests), output),
                       DTYPE_CODES[np.dtype(f"{t.dtype.kind}{t.dtype.itemsize}")], list(t.shape),
                       leaves[-1][0], data, proof)


def chunk_counts(program: list[prog.OpDesc]) -> list[int]:
    """How many chunks each of a job's outputs has (its output records' dtypes and dims)."""
    return [chunking(tuple(program[i].dims), np.dtype(CODE_DTYPES[program[i].dtype]).itemsize)[2]
            for i in prog.output_records(program)]


def asked_chunks(counts: list[int], k: int = SAMPLE, rng: random.Random | None = None) -> list[tuple[int, int]]:
    """``k`` distinct (output, chunk) pairs drawn uniformly from all of a result's chunks (all of
    them when there are fewer): a sample that a provider withholding much of its output fails."""
    rng = rng or random.SystemRandom()
    total = sum(counts)
    picks = sorted(rng.sample(range(total), min(k, total)))
    out, base, j = [], 0, 0
    for output, n in enumerate(counts):
        while j < len(picks) and picks[j] < base + n:
            out.append((output, picks[j] - base))
            j += 1
        base += n
    return out

