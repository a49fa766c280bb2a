"""Job output on disk: appended as it arrives, capped, and read back in pages.

Output never lives whole in memory: a 50 MB run costs the gateway one read buffer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from llmgw_jupyter.paths import ensure_private_dir
from llmgw_jupyter.records import OutputPage

STREAM_FILES = {"stdout": "stdout.jsonl", "stderr": "stderr.log"}
MAX_PAGE_BYTES = 1024 * 1024


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def create_empty(directory: Path, stream: str) -> None:
    """Make ``stream``'s file, empty and private, ahead of its first byte (in a worker thread:
    creating a file costs about 0.4 ms on ext4). Executors that write the files themselves
    append to it (the Ray executor truncates it first)."""
    path = directory / STREAM_FILES[stream]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class CappedOutput:
    """Appends both streams of one job to files, stopping at a shared byte cap.

    A stream's file is opened on its first byte (readers treat a missing file as an empty
    stream), never created on the event loop: creating a file is the costliest step of a short
    job on ext4 (about 0.4 ms). The launch makes stdout's ahead (``create_empty``), which the
    reader opens (``open_existing``); any other is made in a worker thread (``create_file``,
    ``adopt``).
    """

    def __init__(self, directory: Path, cap_bytes: int, *, persisted: bool = False) -> None:
        self.directory = directory
        self.cap_bytes = cap_bytes
        self.sizes = {"stdout": 0, "stderr": 0}
        self.overflowed = False
        # True: an executor already wrote the bytes to the files; they are only counted here.
        self.persisted = persisted
        self._files: dict[str, BinaryIO] = {}
        self.closed = False

    @classmethod
    def resume(cls, directory: Path, cap_bytes: int, *, persisted: bool) -> CappedOutput:
        """Continue after what is already on disk (a run followed again after a restart)."""
        output = cls(directory, cap_bytes, persisted=persisted)
        output.sizes = {stream: output_size(directory, stream) for stream in output.sizes}
        return output

    @property
    def total(self) -> int:
        return self.sizes["stdout"] + self.sizes["stderr"]

    def needs_file(self, stream: str) -> bool:
        """True when the next bytes of ``stream`` would be kept in a file not yet open."""
        return (
            not self.persisted
            and not self.closed
            and stream not in self._files
            and self.total < self.cap_bytes
        )

    def open_existing(self, stream: str) -> bool:
        """Open ``stream``'s file if it exists (made ahead by ``create_empty``): cheap enough for
        the loop, unlike creating it. False when it does not exist yet."""
        try:
            fd = os.open(self.directory / STREAM_FILES[stream], os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return False
        os.fchmod(fd, 0o600)
        self.adopt(stream, os.fdopen(fd, "ab"))
        return True

    def create_file(self, stream: str) -> BinaryIO:
        """Create (open) ``stream``'s file, blocking: the reader runs this off the loop and hands
        the file back with ``adopt``. Raises OSError as ``write`` would."""
        ensure_private_dir(self.directory)
        fd = os.open(
            self.directory / STREAM_FILES[stream], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        os.fchmod(fd, 0o600)  # whatever the umask: output holds prompts and answers
        return os.fdopen(fd, "ab")

    def adopt(self, stream: str, handle: BinaryIO) -> None:
        """Write ``stream`` to ``handle`` from now on."""
        if self.closed or stream in self._files:  # made for an output closed meanwhile
            close_quietly(handle)
        else:
            self._files[stream] = handle

    def write(self, stream: str, data: bytes) -> bytes:
        """Write what fits under the cap; returns the part kept (callers parse only that)."""
        room = self.cap_bytes - self.total
        if len(data) > room:
            self.overflowed = True
            data = data[: max(room, 0)]
        if data:
            if not self.persisted and not self.closed:
                handle = self._files.get(stream) or self._open(stream)
                handle.write(data)
                handle.flush()  # readers (paged results, other processes) see it at once
            self.sizes[stream] += len(data)
        return data

    def _open(self, stream: str) -> BinaryIO:
        handle = self._files[stream] = self.create_file(stream)
        return handle

    def close(self) -> None:
        """Close the files. Bytes a full disk refused stay unwritten (the job already failed for
        them): closing must not raise, or the job would never be settled. Bytes that still
        come (a stream drained after a failure) are counted, not written."""
        self.closed = True
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                handle.close()  # the file is closed even when the final flush fails


def close_quietly(handle: BinaryIO) -> None:
    with contextlib.suppress(OSError):
        handle.close()


def output_size(directory: Path, stream: str) -> int:
    try:
        return (directory / STREAM_FILES[stream]).stat().st_size
    except FileNotFoundError:
        return 0


def read_page(
    directory: Path, stream: str, offset: int, limit: int, *, complete: bool = True
) -> OutputPage:
    """Read ``limit`` bytes from ``offset``, never splitting a UTF-8 character across pages.

    ``complete=False`` says the file may still grow (a running job): a character cut at its end
    is then left for the next page instead of being decoded half. A page always makes progress
    when there is a whole character to read, even if ``limit`` is smaller than that character.
    """
    if stream not in STREAM_FILES:
        raise ValueError(f"stream must be one of {sorted(STREAM_FILES)}")
    limit = max(1, min(limit, MAX_PAGE_BYTES))
    path = directory / STREAM_FILES[stream]
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read(limit)
            at_end = offset + len(chunk) >= size
            if not (at_end and complete):
                whole = _trim_partial_utf8(chunk)
                if not whole and chunk and not at_end:  # limit < this one character's length
                    whole = chunk + handle.read(_sequence_length(chunk[0]) - len(chunk))
                chunk = whole
    except FileNotFoundError:
        return OutputPage(stream, offset, "", offset, 0, True)
    next_offset = offset + len(chunk)
    return OutputPage(
        stream=stream,
        offset=offset,
        data=chunk.decode("utf-8", errors="replace"),
        next_offset=next_offset,
        size=size,
        eof=next_offset >= size,
    )


def _trim_partial_utf8(chunk: bytes) -> bytes:
    """Drop an incomplete multi-byte sequence at the end (it starts the next page)."""
    for back in range(1, min(4, len(chunk)) + 1):
        byte = chunk[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte & 0x80 == 0:  # ASCII: complete
            return chunk
        return chunk if back >= _sequence_length(byte) else chunk[:-back]
    return chunk


def _sequence_length(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4


def remove_job_dir(directory: Path) -> None:
    if not directory.exists():
        return
    for child in directory.iterdir():
        child.unlink(missing_ok=True)
    os.rmdir(directory)
