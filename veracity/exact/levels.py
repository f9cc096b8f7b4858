"""Multi-level traces: a coarse trace committed while a job runs, a step's op-level trace only in a
dispute.

A job's full program (``exact.program``) names every op's record, grouped in steps (a layer call,
one decoded token's pass through a block, an optimizer step). Most records are read only inside
their own step; the ones a later step reads (the residual stream, the KV cache, the mask, the
weights an optimizer step leaves), and the job's outputs, are its step's **exported** records.
They, in record order, make the **coarse trace**: what a provider hashes and commits while it
runs (its chain and Merkle root are ``exact.trace``'s, over the coarse records alone), and what
validators compare.

The **op-level trace of step s** is every record of the step, in order, chained on from the
coarse chain value just before the step's first coarse record (its *seed*): so the chain of the
coarse records before the step followed by the step's records is one chain, and the referees
prove an op's input rows by chain links forward, as for a single-level trace. Records are
numbered in that combined order: the coarse records before the step keep their coarse index, the
step's records follow (``first[s] + local index``); the step's op-level program (``segment``)
names inputs by those numbers. A coarse record's own descriptor (kind ``STEP``) carries what the
Disputes contract needs to go down a level (``open_step``): ``inputs[0]`` its step's first
coarse index, ``consts[0]`` the step's op-level program root, ``params`` (its place in the step,
the step's length); the rest (step, op, dtype, dims, output) is the record's own.

The posted program is the coarse program (``coarse_program``): the step programs' roots inside
it are derived from the model and the shapes, as the full program is, so nothing more is posted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

from veracity.exact import program as prog
from veracity.exact.trace import GENESIS, TraceRecord, chained, leaf_hash

MAX_STEP_COARSE = 257  # a step's coarse records (contracts/Disputes.vy MAX_STEP_LINKS, plus the one disputed)


def exported(program: list[prog.OpDesc]) -> list[int]:
    """The records a later step reads, and the job's outputs, in record order."""
    keep = {i for i, d in enumerate(program) if d.output}
    for d in program:
        for r in d.inputs:
            if r != prog.NO_INPUT and program[r].step < d.step:
                keep.add(r)
    return sorted(keep)


@dataclass(frozen=True)
class Levels:
    """A full program seen as two levels: its coarse records and each step's records."""

    program: list[prog.OpDesc]
    coarse: list[int] = field(default_factory=list)  # full indices of the coarse records, in order
    steps: dict[int, list[int]] = field(default_factory=dict)  # step -> full indices of its records
    first: dict[int, int] = field(default_factory=dict)  # step -> its first coarse index (coarse records before it)
    where: dict[int, tuple[int, int]] = field(default_factory=dict)  # full index -> (step, place in it)
    exports: dict[int, int] = field(default_factory=dict)  # step -> its coarse records

    @classmethod
    def of(cls, program: list[prog.OpDesc]) -> "Levels":
        coarse = exported(program)
        steps: dict[int, list[int]] = {}
        where: dict[int, tuple[int, int]] = {}
        for i, d in enumerate(program):
            at = steps.setdefault(d.step, [])
            where[i] = (d.step, len(at))
            at.append(i)
        exports: dict[int, int] = {}
        for r in coarse:
            exports[program[r].step] = exports.get(program[r].step, 0) + 1
        first: dict[int, int] = {}
        n = 0
        for s in sorted(steps):
            first[s] = n
            n += exports.get(s, 0)
        return cls(program, coarse, steps, first, where, exports)

    @cached_property
    def coarse_index(self) -> dict[int, int]:
        """Full index -> coarse index, for the coarse records."""
        return {r: k for k, r in enumerate(self.coarse)}

    def number(self, s: int, r: int) -> int:
        """Record ``r`` (a full index) as step ``s``'s op-level trace numbers it: a coarse index before
        the step, ``first[s] + place`` inside it."""
        if r == prog.NO_INPUT:
            return r
        step, place = self.where[r]
        if step == s:
            return self.first[s] + place
        if r not in self.coarse_index:
            raise AssertionError(f"record {r} ({self.program[r].op}) is read by step {s} but not exported")
        return self.coarse_index[r]

    def full_index(self, s: int, n: int) -> int:
        """The full index of record number ``n`` in step ``s``'s op-level numbering."""
        return self.steps[s][n - self.first[s]] if n >= self.first[s] else self.coarse[n]

    def segment(self, s: int) -> list[prog.OpDesc]:
        """Step ``s``'s op-level program: its records' descriptors, inputs renumbered."""
        return [replace(self.program[i], inputs=tuple(self.number(s, r) for r in self.program[i].inputs))
                for i in self.steps[s]]

    @cached_property
    def segment_roots(self) -> dict[int, bytes]:
        return {s: prog.program_root(self.segment(s)) for s in self.steps}

    def coarse_program(self) -> list[prog.OpDesc]:
        """The program posted with the order: one ``STEP`` descriptor per coarse record. A step
        exporting more than ``MAX_STEP_COARSE`` records is refused (``Disputes.open_step`` takes the
        leaves of the step's coarse records before the disputed one: at most 256)."""
        if self.exports and max(self.exports.values()) > MAX_STEP_COARSE:
            from veracity.errors import InputError

            s = max(self.exports, key=lambda k: self.exports[k])
            raise InputError(f"step {s} of the job exports {self.exports[s]} records, more than the {MAX_STEP_COARSE} "
                             "a dispute can open: split the job")
        out = []
        for r in self.coarse:
            d = self.program[r]
            s, place = self.where[r]
            out.append(replace(d, kind=prog.STEP, inputs=(self.first[s],), consts=(self.segment_roots[s],),
                               params=(place, len(self.steps[s]))))
        return out

    def coarse_records(self, records: list[TraceRecord]) -> list[TraceRecord]:
        """The coarse trace of a full trace."""
        return [records[i] for i in self.coarse]


def seed(coarse: list[TraceRecord], first: int) -> bytes:
    """The chain value before coarse record ``first`` (a step's op-level trace goes on from it)."""
    return chained(coarse[:first])[-1] if first > 0 else GENESIS


def links(coarse: list[TraceRecord], first: int, k: int) -> list[bytes]:
    """The leaves of coarse records ``first .. k - 1`` (from the seed they hash forward to the chain
    value before ``k``)."""
    return [leaf_hash(r.step, r.op, r.digest) for r in coarse[first:k]]
