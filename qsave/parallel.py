"""One way to run a pure function over many items in spawned worker processes, in order, with progress.

Spawned (not forked) workers: the caller may hold torch threads or open decoders, which a fork would copy
into every child. ``fn`` and the items must be picklable (module-level functions, plain data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_processes(
    fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool = False
) -> Iterator[R]:
    """``fn(item)`` for every item, in input order, in ``workers`` spawned processes (1: in this one)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        chunk = max(1, min(8, len(items) // (4 * workers)))
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                yield result
                bar.update()
