import threading
from collections import Counter

import torch

from bench.streams import images_per_s


def test_every_image_runs_once_across_the_streams_each_with_its_threads() -> None:
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run_one() -> None:
        with lock:
            seen.append((threading.current_thread().name, torch.get_num_threads()))

    threads = torch.get_num_threads()
    try:
        assert images_per_s(run_one, streams=2, threads=1, images=5) > 0
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 5
    assert sorted(Counter(name for name, _ in seen).values()) == [2, 3]  # two streams
    assert {count for _, count in seen} == {1}
