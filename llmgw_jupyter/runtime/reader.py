"""Reading one job's output as it arrives: kept on disk under the cap, stdout parsed line by line
into stored events (and the session it names), the end of stderr kept for the verdict.

A store or disk that cannot take more stops the job; the streams are still drained to their end,
so the CLI is never left blocked on a full pipe."""

from __future__ import annotations

import functools
import sqlite3
import time

from llmgw_jupyter.providers.base import ParsedEvent, StreamParser
from llmgw_jupyter.records import JobRecord, JobStatus
from llmgw_jupyter.runtime.datadir import is_disk_full
from llmgw_jupyter.runtime.executor import ByteStream
from llmgw_jupyter.runtime.notifier import JobChange, JobNotifier
from llmgw_jupyter.runtime.outcome import STORAGE_STOPS, StopReason
from llmgw_jupyter.runtime.output import CappedOutput, close_quietly
from llmgw_jupyter.runtime.process import off_loop
from llmgw_jupyter.runtime.running import RunningJob
from llmgw_jupyter.store.jobs import JobStore, SessionSighting

READ_CHUNK = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
STDERR_TAIL_BYTES = 4096


class OutputReader:
    """The two streams of one run: ``pump`` each of them (concurrently) until it ends."""

    def __init__(
        self,
        *,
        running: RunningJob,
        record: JobRecord,
        parser: StreamParser,
        output: CappedOutput,
        store: JobStore,
        notifier: JobNotifier,
        max_events: int,
    ) -> None:
        self.running = running
        self.record = record
        self.parser = parser
        self.output = output
        self.store = store
        self.notifier = notifier
        self.max_events = max_events
        self.stderr_tail = bytearray()

    async def _make_file(self, stream: str) -> None:
        """Open ``stream``'s file before its first write: on the loop when it was made ahead
        (stdout, at launch), else created in the launcher thread."""
        output = self.output
        if output.open_existing(stream):
            return
        create = functools.partial(output.create_file, stream)
        output.adopt(stream, await off_loop(create, undo=close_quietly))

    async def pump(self, reader: ByteStream, stream: str) -> None:
        running, output = self.running, self.output
        tail = self.stderr_tail if stream == "stderr" else None
        pending = bytearray()
        discarding = False  # inside an over-long line: not parsed, still kept on disk
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                break
            running.last_output = time.monotonic()
            try:
                if output.needs_file(stream):
                    await self._make_file(stream)
                kept = output.write(stream, chunk)
            except OSError as error:
                running.request_stop(_storage_stop(error), detail=str(error))
                continue  # keep draining the pipe so the CLI is not blocked on a full pipe
            if output.overflowed and running.stop_reason is None:
                running.request_stop(StopReason.OVERFLOW)
            if tail is not None:
                tail += kept
                del tail[:-STDERR_TAIL_BYTES]
                continue
            pending += kept
            lines: list[bytes] = []
            while (end := pending.find(b"\n")) >= 0:
                if not discarding:
                    lines.append(bytes(pending[:end]))
                discarding = False
                del pending[: end + 1]
            if len(pending) > MAX_LINE_BYTES:
                pending.clear()
                discarding = True
            if lines and running.stop_reason not in STORAGE_STOPS:
                self._parse_safely(lines)
        if tail is None and pending and not discarding:
            self._parse_safely([bytes(pending)])

    def _parse_safely(self, lines: list[bytes]) -> None:
        """A store that cannot take events (full disk) stops the job."""
        try:
            self._parse_lines(lines)
        except (sqlite3.OperationalError, OSError) as error:
            self.running.request_stop(_storage_stop(error), detail=str(error))

    def _parse_lines(self, lines: list[bytes]) -> None:
        running, parser, record = self.running, self.parser, self.record
        parsed: list[ParsedEvent] = []
        for line in lines:
            parsed.extend(parser.feed(line))
        if not parsed:
            return
        now = time.time()
        room = self.max_events - running.events_stored
        rows = [(now, e.type, e.summary, e.data) for e in parsed[: max(room, 0)]]
        session = None
        if parser.session_id and not running.session_recorded:
            session = self._session(parser.session_id, now)
        if not rows and session is None:
            return
        # Usage the CLI reported early goes in with the events: budgets charge it live.
        usage = parser.usage if rows else None
        if usage is not None and usage.to_dict() != running.usage_stored:
            figures = usage.to_dict()
        else:
            usage, figures = None, None
        # Events, usage and the session the run named: one transaction.
        last_seq = self.store.append_events(record.id, rows, usage=usage, session=session)
        running.events_stored += len(rows)
        running.session_recorded = running.session_recorded or session is not None
        if figures is not None:
            running.usage_stored = figures
        if rows:
            self.notifier.notify(JobChange(record.id, JobStatus.RUNNING.value, last_seq))

    def _session(self, session_id: str, now: float) -> SessionSighting:
        record = self.record
        parent = record.args.get("session_id") if record.kind == "fork" else None
        return SessionSighting(
            session_id=session_id,
            provider=record.provider,
            caller=record.caller,
            parent_session_id=parent,
            working_dir=record.working_dir,
            job_id=record.id,
            ts=now,
        )


def _storage_stop(error: BaseException) -> StopReason:
    return StopReason.DISK_FULL if is_disk_full(error) else StopReason.WRITE_ERROR
