"""qsave.parallel: work in spawned processes, in order, and a stop that drops what has not started."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from qsave.parallel import Stopped, map_in_processes


def _mark(item: tuple[str, float]) -> str:
    """Sleep, then leave a file behind: the files say which items ran (module level: spawn pickles it)."""
    path, delay = item
    time.sleep(delay)
    Path(path).touch()
    return path


def _items(folder: Path, n: int, delay: float = 0.05) -> list[tuple[str, float]]:
    return [(str(folder / f"{i:03d}"), delay) for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_input_order(tmp_path, workers):
    items = _items(tmp_path, 20, delay=0.0)
    assert list(map_in_processes(_mark, items, workers, "order")) == [p for p, _ in items]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_drops_the_items_not_started_and_says_how_far_it_got(tmp_path, workers):
    items, stop = _items(tmp_path, 128), threading.Event()
    seen = []
    with pytest.raises(Stopped, match=r"stopped after 1 of 128 items"):
        for result in map_in_processes(_mark, items, workers, "marks", stop=stop):
            seen.append(result)
            stop.set()
    assert seen == [items[0][0]]
    ran = len(list(tmp_path.iterdir()))
    # one process: nothing after the first; two: only the chunks the workers held or had queued
    assert ran == 1 if workers == 1 else 1 <= ran <= 64
