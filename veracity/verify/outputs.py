"""Output fault proofs: a committed output root that is not the committed trace's, shown in one call.

A provider commits two things for a result: the trace root and its output records' digests (the
Market stores their ``exact.trace.outputs_root``). Anyone who holds the committed trace (an honest
re-run gives the same bits, so the same root) finds the first committed output whose digest is
not its record's, and
``Disputes.prove_output_fault`` checks that against the two roots and the program: the provider
loses at once. ``find_fault`` is the pure part: which output, with every proof the call needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from veracity.exact import merkle
from veracity.exact import program as prog
from veracity.exact.trace import GENESIS, TraceRecord, chained, outputs_tree


@dataclass(frozen=True)
class OutputFault:
    index: int  # the output record in the trace
    desc: prog.OpDesc
    desc_proof: list[bytes]
    count: int  # the committed output root's count and tree
    tree: bytes
    leaf: bytes  # its leaf for that output, and the leaf's proof
    leaf_proof: list[bytes]
    digest: bytes  # the record's digest in the trace, with its chain values and their proofs
    prev: bytes
    prev_proof: list[bytes]
    at: bytes
    at_proof: list[bytes]
    reason: str

    def args(self, order_id: int) -> tuple:
        return (order_id, self.desc.as_tuple(), self.index, self.desc_proof, self.count, self.tree, self.leaf,
                self.leaf_proof, self.digest, self.prev, self.prev_proof, self.at, self.at_proof)


def find_fault(program: list[prog.OpDesc], records: list[TraceRecord], served: list[bytes]) -> OutputFault | None:
    """The fault in a committed output, or None. ``records`` is the committed trace (its root the
    committed one) and ``served`` the committed output digests (``MarketClient.committed_outputs``,
    which checks them against the output root on chain)."""
    outs = prog.output_records(program)
    if not outs:
        return None
    descs = merkle.levels([d.hash() for d in program])
    tree = outputs_tree(served)
    if len(served) != len(outs):  # the count differs: any output record's descriptor shows it
        i = outs[0]
        return OutputFault(i, program[i], merkle.prove(descs, i), len(served), tree, bytes(32), [], bytes(32),
                           bytes(32), [], bytes(32), [], f"the output root holds {len(served)} outputs, "
                           f"the program {len(outs)}")
    leaves = merkle.levels(list(served))
    chain = chained(records)
    links = merkle.levels(chain)
    for j, i in enumerate(outs):
        if served[j] != records[i].digest:
            return OutputFault(i, program[i], merkle.prove(descs, i), len(served), tree, served[j],
                               merkle.prove(leaves, j), records[i].digest, chain[i - 1] if i else GENESIS,
                               merkle.prove(links, i - 1) if i else [], chain[i], merkle.prove(links, i),
                               f"output {j} is not record {i} ({program[i].op}) of the committed trace")
    return None
