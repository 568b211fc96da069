"""One way to run a pure function over many items in spawned worker processes, in order, with progress.

Spawned (not forked) workers: the caller may hold torch threads or open decoders, which a fork would copy
into every child. ``fn`` and the items must be picklable (module-level functions, plain data).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Stopped(RuntimeError):
    """:func:`map_in_processes` was told to stop before every item was done."""


def map_in_processes(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    desc: str,
    progress: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[R]:
    """``fn(item)`` for every item, in input order, in ``workers`` spawned processes (1: in this one).

    ``stop`` (set from another thread) ends the work early: the items not yet started are dropped, those
    the workers hold are finished, and the iterator raises :class:`Stopped`.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    def check(done: int) -> None:
        if stop is not None and stop.is_set():
            raise Stopped(f"{desc}: stopped after {done} of {len(items)} items")

    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar:
        if workers <= 1 or len(items) <= 1:
            for done, item in enumerate(items):
                check(done)
                yield fn(item)
                bar.update()
            return
        chunk = max(1, min(8, len(items) // (4 * workers)))
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            # leaving this loop early (a stop, fn's error) closes pool.map's iterator, which cancels the
            # items not started; the pool's exit then waits only for those the workers hold
            for done, result in enumerate(pool.map(fn, items, chunksize=chunk)):
                check(done)
                yield result
                bar.update()
