"""A detached run's output file, followed as it grows: closed means closed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from llmgw_jupyter.runtime.detached import _TailStream
from llmgw_jupyter.runtime.output import STREAM_FILES


async def test_a_released_stream_ends_and_never_opens_its_file_again(tmp_path: Path) -> None:
    """Released while its reader still reads (a cancelled or timed-out job): the reader sees the
    end of the stream, as with a closed pipe, and no file handle is left open."""
    (tmp_path / STREAM_FILES["stdout"]).write_bytes(b'{"type":"turn.started"}\n')
    run = SimpleNamespace(job_dir=tmp_path, detached=False, ended=lambda check_alive: False)
    stream = _TailStream(run, "stdout", 0)  # type: ignore[arg-type]
    assert await stream.read() == b'{"type":"turn.started"}\n'
    stream.close()
    with open(tmp_path / STREAM_FILES["stdout"], "ab") as output:
        output.write(b'{"type":"turn.completed"}\n')  # written after the release
    assert await stream.read() == b""
    assert stream._file is None
