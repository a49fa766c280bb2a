"""Stored events are kept small; what needs no cutting is kept as it is."""

from __future__ import annotations

from llmgw_jupyter.providers.base import MAX_EVENT_LIST_ITEMS, clip_event


def test_long_strings_and_lists_are_cut_everywhere_in_an_event() -> None:
    event = {
        "type": "system",
        "tools": ["t"] * (MAX_EVENT_LIST_ITEMS + 5),
        "nested": [{"text": "x" * 30, "ok": "short"}, {"n": 1}],
    }
    clipped = clip_event(event, limit=10)
    assert clipped["type"] == "system"
    assert len(clipped["tools"]) == MAX_EVENT_LIST_ITEMS
    assert clipped["nested"][0] == {"text": "x" * 10 + "… [20 more]", "ok": "short"}
    assert clipped["nested"][1] is event["nested"][1]  # nothing to cut: not copied
    # The original is left alone (the raw line stays whole in the job's stdout file).
    assert event["nested"][0]["text"] == "x" * 30
    assert len(event["tools"]) == MAX_EVENT_LIST_ITEMS + 5


def test_an_event_with_nothing_to_cut_is_returned_as_it_is() -> None:
    event = {"type": "init", "tools": ["Bash", "Read"], "mcp": [{"name": "a", "status": "ok"}]}
    assert clip_event(event) is event
