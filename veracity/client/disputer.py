"""A node's side of the dispute games it is in: one ``client.player.Player`` per disputed order.

Providers defend the results they committed; validators challenge results their re-execution
contradicts and play the game through. A party shows what it computed: its trace (stored as a
blob when the job ran) and, once the game is inside a record, that record's tensor and its
inputs' tensors, recomputed by re-running the job (exact, so the same bits; a cheater replays its
own cheat). Every tick each game gets the moves that are due, and ``timeout`` is called once the
other party missed its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from veracity.chain.client import DisputesClient
from veracity.client.player import CHALLENGER, PROVIDER, Player
from veracity.errors import ChainError
from veracity.exact import program as prog
from veracity.exact.levels import Levels
from veracity.exact.trace import TraceRecord
from veracity.workloads.jobs import Job

Tamper = Callable[[int, str, Any], Any]


@dataclass
class Disputer:
    """Plays ``party``'s games (PROVIDER or CHALLENGER) for one account."""

    party: int
    disputes: DisputesClient
    referees: tuple[str, ...]
    log: Callable[[str], None]
    players: dict[int, Player] = field(default_factory=dict)

    def join(self, order_id: int, records: list[TraceRecord], job: Job, order_program: tuple[bytes, int],
             tamper: Callable[[], Tamper | None] | None = None, has_tensors: bool = True,
             shows: Callable[..., list[TraceRecord]] | None = None) -> None:
        """Start playing the game over ``order_id`` with this party's trace of the job. ``shows``
        (tests, the demo: ``sim.adversary.lying_step_records``) replaces the op-level trace of a
        step this party would recompute: ``shows(job, levels, step, model, tamper)``."""
        if order_id in self.players:
            return
        root, length = order_program
        model = None if job.trains else job.model()
        full = job.program(model) if length else []
        levels: Levels | None = Levels.of(full) if full else None
        program = levels.coarse_program() if levels is not None else []
        if length and prog.program_root(program) != root:
            levels = None  # an order posted with a single-level program: every record in its trace
            program = full
        if length and prog.program_root(program) != root:
            self.log(f"order {order_id}: the order's program is not this job's; its records cannot be judged")
            program = full = []
        cache: dict[int, np.ndarray] = {}
        table = job.constants(model) if program else {}

        def tensor(i: int) -> np.ndarray | None:
            if not has_tensors or not full:
                return None
            if i not in cache:  # one replay keeps the record and the inputs its judgement reads
                wanted = {i, *(j for j in full[i].inputs if j < len(full))}
                cache.update(job.tensors(wanted, model=model, tamper=tamper() if tamper else None))
            return cache.get(i)

        def step_records(s: int) -> list[TraceRecord] | None:
            if not has_tensors or levels is None:
                return None
            if shows is not None:
                return shows(job, levels, s, model, tamper() if tamper else None)
            return job.step_records(levels, s, model, tamper() if tamper else None, keep=cache)  # one re-run

        self.players[order_id] = Player(self.party, self.disputes, self.referees, order_id, records, program,
                                        tensor, lambda d: prog.constants(None, d, table), levels, step_records)

    def tick(self, now: int) -> list[int]:
        """Moves due in every game; returns the orders whose games have settled (and forgets them)."""
        done = []
        for oid, player in list(self.players.items()):
            try:
                g = self.disputes.game(oid)
                if g.stage_name == "settled":
                    done.append(oid)
                    continue
                if now > g.deadline:
                    ours = (g.revealed == CHALLENGER) == (self.party == CHALLENGER) or g.stage_name == "judging"
                    if ours:
                        self.disputes.timeout(oid)
                        self.log(f"order {oid}: dispute, the other side missed its move ({g.stage_name})")
                    continue
                move = player.act(g)
                if move:
                    self.log(f"order {oid}: dispute, {move}")
            except ChainError as exc:
                self.log(f"order {oid}: dispute: {exc}")
            except Exception as exc:  # one game's failure never stops the moves of the others
                self.log(f"order {oid}: dispute: could not move ({type(exc).__name__}: {exc})")
        for oid in done:
            del self.players[oid]
        return done


__all__ = ["Disputer", "PROVIDER", "CHALLENGER"]
