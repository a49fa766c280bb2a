"""Job output on disk: the shared cap, and paged reads that never split a UTF-8 character."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import WAIT, RuntimeFactory, spec

from llmgw_jupyter.errors import InvalidInputError, NotFoundError
from llmgw_jupyter.providers.base import Provider
from llmgw_jupyter.records import OutputPage
from llmgw_jupyter.runtime import output


def read_all(directory: Path, limit: int, *, complete: bool = True) -> list[OutputPage]:
    pages, offset = [], 0
    for _ in range(100_000):
        page = output.read_page(directory, "stdout", offset, limit, complete=complete)
        assert page.next_offset > offset or page.eof, "a page must make progress"
        pages.append(page)
        offset = page.next_offset
        if page.eof:
            return pages
    raise AssertionError("paging did not terminate")


def test_the_cap_is_shared_by_both_streams_and_the_kept_part_is_returned(tmp_path: Path) -> None:
    out = output.CappedOutput(tmp_path / "job", cap_bytes=10)

    assert out.write("stdout", b"123456") == b"123456"
    assert out.write("stderr", b"abcdef") == b"abcd"
    assert out.overflowed
    assert out.write("stdout", b"more") == b""
    out.close()

    assert out.sizes == {"stdout": 6, "stderr": 4} and out.total == 10
    assert (tmp_path / "job" / "stdout.jsonl").read_bytes() == b"123456"
    assert (tmp_path / "job" / "stderr.log").read_bytes() == b"abcd"


def test_a_file_made_off_the_loop_is_private_and_takes_the_stream_from_then_on(
    tmp_path: Path,
) -> None:
    out = output.CappedOutput(tmp_path / "job", cap_bytes=10)
    assert out.needs_file("stdout") and out.needs_file("stderr")

    out.adopt("stdout", out.create_file("stdout"))  # what the reader does in a worker thread
    assert not out.needs_file("stdout") and out.needs_file("stderr")
    assert out.write("stdout", b"0123456789xyz") == b"0123456789"
    assert not out.needs_file("stderr")  # full: nothing more would be kept
    out.close()

    stdout = tmp_path / "job" / "stdout.jsonl"
    assert stdout.read_bytes() == b"0123456789"
    assert stdout.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "job" / "stderr.log").exists()


def test_a_file_made_ahead_is_private_and_opened_without_creating_it(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    out = output.CappedOutput(job, cap_bytes=100)
    assert not out.open_existing("stdout")  # not made yet: the reader creates it off the loop

    old = os.umask(0)
    try:
        output.create_empty(job, "stdout")
    finally:
        os.umask(old)
    assert (job / "stdout.jsonl").stat().st_mode & 0o777 == 0o600
    assert out.open_existing("stdout") and not out.needs_file("stdout")
    out.write("stdout", b"line\n")
    output.create_empty(job, "stdout")  # made again (late): what was written stays
    out.write("stdout", b"more\n")
    out.close()
    assert (job / "stdout.jsonl").read_bytes() == b"line\nmore\n"


def test_a_closed_output_writes_nothing_more_and_closes_a_file_made_too_late(
    tmp_path: Path,
) -> None:
    out = output.CappedOutput(tmp_path / "job", cap_bytes=100)
    late = out.create_file("stdout")  # made in a worker thread while the job was given up
    out.close()

    out.adopt("stdout", late)
    assert late.closed
    assert not out.needs_file("stderr")
    assert out.write("stderr", b"drained") == b"drained"  # counted, not written
    assert out.sizes["stderr"] == 7 and not (tmp_path / "job" / "stderr.log").exists()


def test_an_executor_that_persists_its_output_needs_no_file_of_the_runtime(tmp_path: Path) -> None:
    out = output.CappedOutput(tmp_path / "job", cap_bytes=10, persisted=True)
    assert not out.needs_file("stdout") and not out.needs_file("stderr")


def test_output_an_executor_persisted_is_counted_against_the_cap_not_written_again(
    tmp_path: Path,
) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "stdout.jsonl").write_bytes(b"1234")  # written by the executor before a restart
    out = output.CappedOutput.resume(job, cap_bytes=10, persisted=True)

    assert out.sizes == {"stdout": 4, "stderr": 0}
    assert out.write("stdout", b"5678") == b"5678"
    assert out.write("stderr", b"abcdef") == b"ab" and out.overflowed
    out.close()

    assert (job / "stdout.jsonl").read_bytes() == b"1234"  # the runtime wrote nothing
    assert not (job / "stderr.log").exists()


def test_closing_after_the_disk_refused_a_write_does_not_raise(tmp_path: Path) -> None:
    """A refused write leaves bytes in the file's buffer; closing must not raise them again (the
    supervisor would die before settling the job). A file-size limit makes the kernel refuse."""
    child = f"""
import resource, signal, sys
from pathlib import Path
from llmgw_jupyter.runtime.output import CappedOutput
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
out = CappedOutput(Path({str(tmp_path / "job")!r}), cap_bytes=10**6)
out.write("stdout", b"x" * 1000)
try:
    out.write("stdout", b"y" * 100)  # buffered, then refused by the flush
except OSError:
    print("refused", out.sizes["stdout"])
out.close()
print("closed")
"""
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "1000", "closed"]


def test_output_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    out = output.CappedOutput(tmp_path / "job", cap_bytes=1000)
    out.write("stdout", b'{"type": "turn.started"}\n')

    page = output.read_page(tmp_path / "job", "stdout", 0, 100)  # while the writer is open

    assert page.data == '{"type": "turn.started"}\n' and page.eof
    out.close()


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=1, max_size=200), limit=st.integers(min_value=1, max_value=16))
def test_pages_of_any_size_reassemble_the_text_without_splitting_characters(
    tmp_path_factory: pytest.TempPathFactory, text: str, limit: int
) -> None:
    directory = tmp_path_factory.mktemp("pages")
    (directory / "stdout.jsonl").write_bytes(text.encode())

    pages = read_all(directory, limit)

    assert "".join(p.data for p in pages) == text
    for page in pages:
        assert page.data.encode() == text.encode()[page.offset : page.next_offset]
        assert page.size == len(text.encode())


def test_a_limit_smaller_than_one_character_still_returns_that_character(tmp_path: Path) -> None:
    (tmp_path / "stdout.jsonl").write_bytes("😀é".encode())

    first = output.read_page(tmp_path, "stdout", 0, 1)

    assert first.data == "😀" and first.next_offset == 4 and not first.eof
    assert output.read_page(tmp_path, "stdout", 4, 1).data == "é"


def test_a_growing_file_cut_inside_a_character_is_read_whole_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "stdout.jsonl"
    euro = "€".encode()
    path.write_bytes(b"price: " + euro[:2])  # the writer is mid-character

    live = output.read_page(tmp_path, "stdout", 0, 100, complete=False)
    assert live.data == "price: " and live.next_offset == 7

    with path.open("ab") as handle:
        handle.write(euro[2:] + b"\n")
    rest = output.read_page(tmp_path, "stdout", live.next_offset, 100, complete=False)
    assert rest.data == "€\n" and rest.eof


def test_a_finished_file_cut_inside_a_character_still_reaches_its_end(tmp_path: Path) -> None:
    """The output cap can cut a character in half; paging must still terminate."""
    (tmp_path / "stdout.jsonl").write_bytes(b"ok " + "€".encode()[:2])

    pages = read_all(tmp_path, 4)

    assert pages[-1].eof and pages[-1].next_offset == 5
    assert "".join(p.data for p in pages).startswith("ok ")


def test_reading_a_missing_stream_is_an_empty_final_page(tmp_path: Path) -> None:
    page = output.read_page(tmp_path / "never-ran", "stderr", 0, 100)
    assert (page.data, page.size, page.eof) == ("", 0, True)


async def test_runtime_pages_multibyte_output_of_a_job(
    runtime: RuntimeFactory, echo_provider: Provider
) -> None:
    rt = await runtime(providers={"fake": echo_provider})
    done = await rt.wait_finished((await rt.submit(spec("héllo wörld € 😀 " * 50))).id, WAIT)
    raw = (rt.job_dir(done.id) / "stdout.jsonl").read_bytes()
    assert "😀".encode() in raw  # raw UTF-8, not JSON escapes: pages may split a character

    for limit in (1, 2, 3, 5, 7, 64):
        text, offset = "", 0
        while True:
            page = rt.read_output(done.id, "stdout", offset, limit)
            assert "\ufffd" not in page.data
            text += page.data
            offset = page.next_offset
            if page.eof:
                break
        assert text.encode() == raw


async def test_read_output_validates_its_arguments(
    runtime: RuntimeFactory, echo_provider: Provider
) -> None:
    rt = await runtime(providers={"fake": echo_provider})
    job = await rt.submit(spec(hold=True))

    with pytest.raises(InvalidInputError) as bad_stream:
        rt.read_output(job.id, "stdin")
    assert bad_stream.value.field == "stream"
    with pytest.raises(InvalidInputError) as bad_offset:
        rt.read_output(job.id, "stdout", offset=-1)
    assert bad_offset.value.field == "offset"
    with pytest.raises(NotFoundError):
        rt.read_output("missing-job")
    assert rt.read_output(job.id).eof
