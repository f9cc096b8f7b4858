"""One party's moves in a live dispute game, sent as transactions: the pure rules of what a party
shows (``verify.game``) played against the chain through a ``DisputesClient``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.exact import program as prog
from veracity.exact.trace import CODE_DTYPES, TraceRecord
from veracity.verify.bisection import TraceView
from veracity.verify.game import CHALLENGER, PROVIDER, TensorSide, desc_proof, judge_args

__all__ = ["CHALLENGER", "PROVIDER", "Player"]


@dataclass
class Player:
    """One party's moves in a live game (``party``: PROVIDER or CHALLENGER).

    ``tensor(i)`` gives record ``i``'s tensor as this party computed it (None if it cannot: a
    lazy provider has none); ``constants(desc)`` the constant tensors a descriptor names.
    """

    party: int
    disputes: Any  # chain.client.DisputesClient acting as this party
    referees: tuple[str, ...]  # the five referees (``Deployment.referees``)
    order_id: int
    records: list[TraceRecord]
    program: list[prog.OpDesc]
    tensor: Callable[[int], np.ndarray | None]
    constants: Callable[[prog.OpDesc], tuple[np.ndarray, ...]]

    def __post_init__(self) -> None:
        self.view = TraceView(self.records)
        self._sides: dict[int, TensorSide] = {}
        self._consts: dict[bytes, TensorSide] = {}

    def side(self, i: int) -> TensorSide | None:
        if i not in self._sides:
            t = self.tensor(i)
            if t is None:
                return None
            self._sides[i] = TensorSide(np.asarray(t).astype(CODE_DTYPES[self.program[i].dtype]))
        return self._sides[i]

    def act(self, g: Any = None) -> str | None:
        """Make this party's move if one is due in game state ``g`` (read from the chain when not
        given); returns what it did (None: nothing to do)."""
        g = g if g is not None else self.disputes.game(self.order_id)
        mine = not (g.revealed & self.party)
        k = g.differ
        stage = g.stage_name
        if stage == "bisecting" and mine:
            self.disputes.reveal(self.order_id, *self.view.reveal(g.query))
            return f"revealed the chain value of record {g.query}"
        if stage == "located" and mine:  # open the record
            side = self.side(k)
            if side is None:
                return None
            self.disputes.open_record(self.order_id, self.program[k].as_tuple(), desc_proof(self.program, k), side.root)
            return f"opened record {k} ({self.program[k].op})"
        if stage == "descending" and mine:
            side = self.side(k)
            if side is None:
                return None
            self.disputes.descend(self.order_id, *side.children(g.level, g.index))
            return f"revealed the children of chunk-tree node {g.level}/{g.index}"
        if stage == "chunk":  # the challenger first, then the provider with both
            side = self.side(k)
            if side is None:
                return None
            desc = self.program[k].as_tuple()
            if self.party == CHALLENGER and g.revealed == 0:
                self.disputes.reveal_chunk(self.order_id, desc, side.chunks[g.index])
                return f"revealed chunk {g.index}"
            if self.party == PROVIDER and g.revealed == CHALLENGER:
                other = self.disputes.revealed_chunk(self.order_id, g.index)
                self.disputes.reveal_chunk(self.order_id, desc, side.chunks[g.index], other)
                return f"revealed chunk {g.index} and the challenger's"
            return None
        if stage == "judging":  # anyone may call: the verdict depends only on the proofs
            desc = self.program[k]

            def const(i: int) -> TensorSide:
                digest = desc.consts[i]
                if digest not in self._consts:
                    self._consts[digest] = TensorSide(self.constants(desc)[i])
                return self._consts[digest]

            call = judge_args(desc, k, g.element, self.view, self._agreed, const)
            if call is None:
                return None
            self.disputes.judge(self.referees, call[0], self.order_id, *call[1])
            return f"called the referee on element {g.element} of record {k} ({desc.op})"
        return None

    def _agreed(self, i: int) -> TensorSide:
        side = self.side(i)
        if side is None:
            raise ValueError(f"record {i}'s tensor is not available")
        return side
