"""group_compatible: batches of equal key, bounded size, in order of first arrival."""

from __future__ import annotations

import pytest

from stream.scheduling import group_compatible


def first_letter(item: str) -> str:
    return item[0]


def test_items_are_grouped_by_key_in_order_of_first_arrival() -> None:
    items = ["b1", "a1", "b2", "c1", "a2"]
    assert group_compatible(items, first_letter, max_batch=8) == [
        ["b1", "b2"],
        ["a1", "a2"],
        ["c1"],
    ]


def test_a_group_longer_than_max_batch_is_split_in_order() -> None:
    items = ["a1", "a2", "b1", "a3", "a4", "a5"]
    assert group_compatible(items, first_letter, max_batch=2) == [
        ["a1", "a2"],
        ["a3", "a4"],
        ["a5"],
        ["b1"],
    ]


def test_max_batch_of_one_runs_every_item_alone() -> None:
    assert group_compatible(iter(["a1", "a2"]), first_letter, max_batch=1) == [["a1"], ["a2"]]


def test_no_items_make_no_batches() -> None:
    assert group_compatible([], first_letter, max_batch=4) == []


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_below_one_is_refused(max_batch: int) -> None:
    with pytest.raises(ValueError, match=f"max_batch must be at least 1, got {max_batch}"):
        group_compatible(["a1"], first_letter, max_batch=max_batch)
