"""One party's moves in a live dispute game, sent as transactions: the pure rules of what a party
shows (``verify.game``) played against the chain through a ``DisputesClient``.

A game over a two-level program (``exact.levels``) bisects the coarse traces first; at the first
differing coarse record each party opens its step (``open_step``: its op-level trace, recomputed
now, tied to its coarse record and to the agreed chain value before the step), and the game goes
on inside that step exactly as inside a single-level trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from veracity.exact import levels as lv
from veracity.exact import merkle
from veracity.exact import program as prog
from veracity.exact.trace import CODE_DTYPES, TraceRecord
from veracity.verify.bisection import TraceView
from veracity.verify.game import CHALLENGER, PROVIDER, TensorSide, desc_proof, judge_args

__all__ = ["CHALLENGER", "PROVIDER", "Player"]


@dataclass
class Level:
    """What a party plays at one level: its view (reveals), the program the located record opens
    against, the records' numbering (the referees' record numbers: ``offset`` + position) and
    the full program's index of each number (for tensors)."""

    view: TraceView
    program: list[prog.OpDesc]
    offset: int
    refs: Any  # records and chain values numbered as the referees number them (``verify.game.record_ref``)
    full: Callable[[int], int]


@dataclass
class Player:
    """One party's moves in a live game (``party``: PROVIDER or CHALLENGER).

    ``records`` is the committed trace and ``program`` the order's. ``tensor(i)`` gives record
    ``i``'s tensor (an index of the full program) as this party computed it (None if it cannot: a
    lazy provider has none); ``constants(desc)`` the constant tensors a descriptor names. With a
    two-level program, ``levels`` is the full program's and ``step_records(s)`` a step's op-level
    records as this party computes them (None if it cannot).
    """

    party: int
    disputes: Any  # chain.client.DisputesClient acting as this party
    referees: tuple[str, ...]  # the referees (``Deployment.referees``)
    order_id: int
    records: list[TraceRecord]
    program: list[prog.OpDesc]
    tensor: Callable[[int], np.ndarray | None]
    constants: Callable[[prog.OpDesc], tuple[np.ndarray, ...]]
    levels: lv.Levels | None = None
    step_records: Callable[[int], list[TraceRecord] | None] | None = None

    def __post_init__(self) -> None:
        self.view = TraceView(self.records)
        self.top = Level(self.view, self.program, 0, self.view, lambda i: i)
        self._steps: dict[int, Level | None] = {}
        self._sides: dict[int, TensorSide] = {}
        self._consts: dict[bytes, TensorSide] = {}

    def side(self, i: int) -> TensorSide | None:
        """Record ``i``'s tensor (a full-program index), ready to reveal."""
        if i not in self._sides:
            t = self.tensor(i)
            if t is None:
                return None
            desc = (self.levels.program if self.levels is not None else self.program)[i]
            self._sides[i] = TensorSide(np.asarray(t).astype(CODE_DTYPES[desc.dtype]))
        return self._sides[i]

    def step_level(self, s: int) -> Level | None:
        """Step ``s``'s op-level trace as this party computes it (None if it cannot)."""
        if s not in self._steps:
            got = self.step_records(s) if self.step_records is not None else None
            levels = self.levels
            if got is None or levels is None:
                self._steps[s] = None
            else:
                first = levels.first[s]
                view = TraceView(got, lv.seed(self.records, first))
                refs = SimpleNamespace(records=self.records[:first] + got, chain=self.view.chain[:first] + view.chain)
                self._steps[s] = Level(view, levels.segment(s), first, refs, lambda n: levels.full_index(s, n))
        return self._steps[s]

    def level(self, g: Any) -> Level | None:
        """The level game state ``g`` is at (None: inside a step this party cannot compute)."""
        if not g.fine:
            return self.top
        assert self.levels is not None
        s = next(s for s, f in self.levels.first.items()
                 if f == g.offset and self.levels.segment_roots[s] == g.prog_root)
        return self.step_level(s)

    def act(self, g: Any = None) -> str | None:
        """Make this party's move if one is due in game state ``g`` (read from the chain when not
        given); returns what it did (None: nothing to do)."""
        g = g if g is not None else self.disputes.game(self.order_id)
        mine = not (g.revealed & self.party)
        if g.stage_name in ("bisecting", "located", "descending", "chunk", "judging") and \
                g.fine and self.levels is None:
            return None
        at = self.level(g) if g.stage_name != "settled" else None
        if at is None:
            return None
        k = g.differ
        stage = g.stage_name
        if stage == "bisecting" and mine:
            self.disputes.reveal(self.order_id, *at.view.reveal(g.query))
            return f"revealed the chain value of record {g.query}" + (" of the step" if g.fine else "")
        if stage == "located" and mine and not g.fine and self.program[k].kind == prog.STEP:
            return self.open_step(k)
        if stage == "located" and mine:  # open the record
            side = self.side(at.full(at.offset + k))
            if side is None:
                return None
            self.disputes.open_record(self.order_id, at.program[k].as_tuple(), desc_proof(at.program, k), side.root)
            return f"opened record {at.offset + k} ({at.program[k].op})"
        if stage == "descending" and mine:
            side = self.side(at.full(at.offset + k))
            if side is None:
                return None
            self.disputes.descend(self.order_id, *side.children(g.level, g.index))
            return f"revealed the children of chunk-tree node {g.level}/{g.index}"
        if stage == "chunk":  # the challenger first, then the provider with both
            side = self.side(at.full(at.offset + k))
            if side is None:
                return None
            desc = at.program[k].as_tuple()
            if self.party == CHALLENGER and g.revealed == 0:
                self.disputes.reveal_chunk(self.order_id, desc, side.chunks[g.index])
                return f"revealed chunk {g.index}"
            if self.party == PROVIDER and g.revealed == CHALLENGER:
                other = self.disputes.revealed_chunk(self.order_id, g.index)
                self.disputes.reveal_chunk(self.order_id, desc, side.chunks[g.index], other)
                return f"revealed chunk {g.index} and the challenger's"
            return None
        if stage == "judging":  # anyone may call: the verdict depends only on the proofs
            desc = at.program[k]

            def const(i: int) -> TensorSide:
                digest = desc.consts[i]
                if digest not in self._consts:
                    self._consts[digest] = TensorSide(self.constants(desc)[i])
                return self._consts[digest]

            def agreed(n: int) -> TensorSide:
                side = self.side(at.full(n))
                if side is None:
                    raise ValueError(f"record {n}'s tensor is not available")
                return side

            call = judge_args(desc, at.offset + k, g.element, at.refs, agreed, const)
            if call is None:
                return None
            self.disputes.judge(self.referees, call[0], self.order_id, *call[1])
            return f"called the referee on element {g.element} of record {at.offset + k} ({desc.op})"
        return None

    def open_step(self, k: int) -> str | None:
        """Open coarse record ``k``'s step: this party's op-level trace of it, tied to the record."""
        desc = self.program[k]
        first, (place, size) = desc.inputs[0], desc.params
        at = self.step_level(desc.step)
        if at is None or len(at.view.chain) != size:
            return None
        start = lv.seed(self.records, first)
        prev, prev_proof = (at.view.chain[place - 1], merkle.prove(at.view.tree, place - 1)) if place else (start, [])
        value, proof = at.view.reveal(place)
        self.disputes.open_step(self.order_id, desc.as_tuple(), desc_proof(self.program, k), self.records[k].digest,
                                start, lv.links(self.records, first, k), at.view.root, prev, prev_proof, value, proof)
        return f"opened step {desc.step} at coarse record {k} ({desc.op})"
