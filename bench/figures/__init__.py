"""The registry of figures: number -> (title, function). Add a figure by adding a line.

A figure function takes the run's Context and answers a FigureResult whose checks are
the rows of the summary. A part that cannot be measured yet (isolated mode) answers a
`Check.pending` row, so that it is listed, never silently dropped.
"""

from __future__ import annotations

from bench.figures import (
    callback,
    events,
    gateway,
    management,
    payload,
    pipeline,
    replicas,
    small_call,
    startup,
    streams,
    threads,
)
from bench.figures.common import Check, Context, Figure, FigureResult

FIGURES: tuple[Figure, ...] = (
    Figure(1, small_call.TITLE, small_call.run),
    Figure(2, callback.TITLE, callback.run),
    Figure(3, threads.TITLE, threads.run),
    Figure(4, payload.TITLE, payload.run),
    Figure(5, startup.TITLE, startup.run),
    Figure(6, management.TITLE, management.run),
    Figure(7, streams.TITLE, streams.run),
    Figure(8, pipeline.TITLE, pipeline.run),
    Figure(9, gateway.TITLE, gateway.run),
    Figure(10, events.TITLE, events.run),
    Figure(11, replicas.TITLE, replicas.run),
)

# The figures that measure the call path (the ones a change to native/host/envelope moves).
CALL_PATH: tuple[int, ...] = (1, 2, 3, 4)

__all__ = ["CALL_PATH", "FIGURES", "Check", "Context", "Figure", "FigureResult"]
