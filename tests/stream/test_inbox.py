"""LatestBox: one slot, latest wins, drops counted, safe across two threads."""

from __future__ import annotations

import threading

from stream.inbox import LatestBox

WAIT_S = 10.0


def test_new_box_is_empty() -> None:
    box: LatestBox[int] = LatestBox()
    assert not box
    assert box.take() is None
    assert box.dropped == 0


def test_put_then_take_returns_the_item_and_empties_the_box() -> None:
    box: LatestBox[str] = LatestBox()
    assert box.put("a") is False
    assert box
    assert box.take() == "a"
    assert not box
    assert box.take() is None
    assert box.dropped == 0


def test_put_over_an_untaken_item_replaces_it_and_counts_the_drop() -> None:
    box: LatestBox[str] = LatestBox()
    box.put("a")
    assert box.put("b") is True
    assert box.put("c") is True
    assert box.take() == "c"
    assert box.dropped == 2
    assert box.put("d") is False
    assert box.dropped == 2


def test_two_threads_lose_nothing_uncounted_and_never_go_back_in_time() -> None:
    count = 20_000
    box: LatestBox[int] = LatestBox()
    taken: list[int] = []
    start = threading.Barrier(2, timeout=WAIT_S)

    def produce() -> None:
        start.wait()
        for item in range(count):
            box.put(item)

    def consume() -> None:
        start.wait()
        while not taken or taken[-1] != count - 1:
            item = box.take()
            if item is not None:
                taken.append(item)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert taken == sorted(set(taken))
    assert len(taken) + box.dropped == count
    assert not box


def test_take_if_takes_only_a_wanted_item() -> None:
    box: LatestBox[int] = LatestBox()
    assert box.take_if(lambda item: True) is None
    box.put(3)
    assert box.take_if(lambda item: item > 5) is None
    assert box.take_if(lambda item: item == 3) == 3
    assert not box and box.dropped == 0
