"""A full disk fails the job as ``disk_full`` and refuses new submissions clearly; nothing is
left ``running``. The data dir lives on a real 1 MiB tmpfs that bubblewrap mounts for a child
process (no root needed where user namespaces work), so ENOSPC comes from the kernel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from runtime_fakes import this_dir

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from runtime_fakes import FakeProvider, write_fake_cli
    from llmgw_jupyter.errors import GatewayError
    from llmgw_jupyter.runtime import JobSpec, Runtime, RuntimeConfig
    from llmgw_jupyter.runtime.output import STREAM_FILES

    FLOOD = '''
    start()
    line = json.dumps({"type": "item.completed", "item": {"type": "note", "pad": "x" * 4000}})
    for _ in range(2000):
        sys.stdout.write(line + "\\\\n")
    sys.stdout.flush()
    complete()
    '''

    async def main():
        script = write_fake_cli(Path(sys.argv[2]), "flood", FLOOD)
        rt = Runtime(RuntimeConfig(data_dir="/full/data", isolation="off",
                                   providers={"fake": FakeProvider(script)}))
        await rt.start()
        job = await rt.submit(JobSpec("fake", "codex_request_async", "exec", {"prompt": "go"}))
        done = await rt.wait_finished(job.id, 60)
        out = Path(rt.job_dir(job.id)) / STREAM_FILES["stdout"]
        report = {"status": done.status.value, "category": done.error_category
                  and done.error_category.value, "message": done.error_message,
                  "kept": out.stat().st_size if out.exists() else 0}
        try:
            await rt.submit(JobSpec("fake", "codex_request_async", "exec",
                                    {"prompt": "more " * 20000}))
            report["second"] = "accepted"
        except GatewayError as error:
            report["second"] = error.category.value
            report["second_message"] = error.message
        await rt.close()
        print(json.dumps(report))

    asyncio.run(main())
    """
)


def test_a_full_disk_fails_the_job_as_disk_full_and_refuses_new_jobs(tmp_path: Path) -> None:
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is part of the test set-up (scripts/test.sh installs it)"
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    done = subprocess.run(
        [bwrap, "--dev-bind", "/", "/", "--size", str(1024 * 1024), "--tmpfs", "/full",
         sys.executable, str(child), this_dir(), str(fakes)],
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["status"] == "failed", report
    assert report["category"] == "disk_full", report
    assert "kept" in report["message"]
    assert report["kept"] > 0  # what was captured before the disk filled is still there
    assert report["second"] == "disk_full", report
    assert "disk is full" in report["second_message"]
