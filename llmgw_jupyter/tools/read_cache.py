"""Answers of read tools, kept while nothing in the store changed.

Why: an agent polling a finished or quiet job with ``llm_job_status`` asks the same question
over and over; reading the job row and its events, validating the views and encoding the
answer was most of what such a call cost (about 60 of 75 us in process). Here the encoded
answer is kept, keyed by everything that shapes it (the tool, the caller, the arguments), and
all of it is dropped as soon as the jobs' change stamp moves (``Runtime.jobs_stamp``, from
``Database.changes_of``: any write to a job or an event through this process's connection, or a
commit by another process; a grant's rate-limit hits and audit rows do not move it). A job that
is running writes its events, so its answers are recomputed; a revoked grant is refused by the
gateway before any handler runs, and keys carry the caller, so one caller never gets another's
answer.

Bounded: at most ``MAX_ENTRIES`` answers of at most ``MAX_ANSWER_CHARS`` each (a larger one is
answered, not kept).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from pydantic import BaseModel

from llmgw_jupyter.contract import Encoded, output_json

MAX_ENTRIES = 256
MAX_ANSWER_CHARS = 64 * 1024


class ReadCache:
    """Encoded answers by key, valid while ``stamp()`` returns what it did when they were made."""

    def __init__(
        self,
        stamp: Callable[[], Hashable],
        *,
        max_entries: int = MAX_ENTRIES,
        max_answer_chars: int = MAX_ANSWER_CHARS,
    ) -> None:
        self._stamp = stamp
        self._max_entries = max_entries
        self._max_answer_chars = max_answer_chars
        self._entries: OrderedDict[Hashable, Encoded] = OrderedDict()
        self._valid_for: Hashable = None

    def answer(self, key: Hashable, make: Callable[[], BaseModel]) -> Encoded:
        """The answer for ``key``: kept, or made by ``make()`` now (its errors are raised and
        nothing is kept)."""
        # The stamp is read before ``make`` reads the store: a write in between can only make
        # the kept answer newer than its stamp, never older.
        stamp = self._stamp()
        if stamp != self._valid_for:
            self._entries.clear()
            self._valid_for = stamp
        kept = self._entries.get(key)
        if kept is not None:
            self._entries.move_to_end(key)
            return kept
        output = make()
        encoded = Encoded(output, output_json(output))
        if len(encoded.json) <= self._max_answer_chars:
            self._entries[key] = encoded
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return encoded

    def clear(self) -> None:
        self._entries.clear()
        self._valid_for = None

    def __len__(self) -> int:
        return len(self._entries)
