"""A notebook run headless (nbclient, papermill) is saved with each job's final snapshot.

nbclient keeps only the IOPub messages whose parent is the cell it executes at that moment. The
update that ends a job's snapshot comes from the task following the job, which runs between cells
or while a later cell awaits, and carries the parent of the cell that started the job: without a
second update sent from the executing cell, the saved notebook said "queued" forever.

Jobs run the fake CLI behind Codex's tools in the kernel's embedded gateway (the test is about
the output, not the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_harness import KernelHarness
from nbclient import NotebookClient

from llmgw_jupyter.kernel.handle import JOB_MIME

pytestmark = pytest.mark.timeout(240)

# Waits for the end only through the follow task: ``job.done`` reads the last known state and
# sends no request, so no update comes from this cell's own code. The bound keeps a broken
# follow task from hanging the test; each turn yields the loop to the follow task.
AWAIT_THE_FOLLOW_TASK = """\
import asyncio, time
deadline = time.monotonic() + 60
while not job.done and time.monotonic() < deadline:
    await asyncio.sleep(0.05)
assert job.done, job.summary_line()
"""
# Blocks the kernel until the job has ended, through a handle of its own: the shown handle's
# follow task sees the end only after this cell, while the kernel is idle or runs the next one.
BLOCK_UNTIL_THE_JOB_ENDED = """\
from llmgw_jupyter.kernel import JobHandle
assert JobHandle.attach(job.client, job.id).wait(60)
"""


async def run_headless(cells: list[str], env: dict[str, str], workdir: Path) -> Any:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    client = NotebookClient(
        notebook,
        timeout=120,
        store_widget_state=False,  # as JupyterLab saves by default: no widget models
        resources={"metadata": {"path": str(workdir)}},
    )
    await client.async_execute(env=env)
    return notebook


def job_snapshot(cell: Any) -> dict[str, Any]:
    [output] = [o for o in cell.outputs if o.output_type == "display_data" and JOB_MIME in o.data]
    return dict(output.data)


@pytest.mark.parametrize(
    "waiting_cells",
    [
        pytest.param([AWAIT_THE_FOLLOW_TASK], id="ended-while-a-cell-awaits"),
        pytest.param([BLOCK_UNTIL_THE_JOB_ENDED, AWAIT_THE_FOLLOW_TASK], id="ended-between-cells"),
    ],
)
async def test_the_saved_snapshot_shows_a_job_that_ended_while_later_cells_ran(
    fake_env: dict[str, str], tmp_path: Path, waiting_cells: list[str]
) -> None:
    env = {**fake_env, "LLMGW_DATA_DIR": str(tmp_path / "data")}
    notebook = await run_headless(
        [
            "%load_ext llmgw_jupyter",
            f"job = %codex_async --cd {tmp_path} Quick headless answer",
            *waiting_cells,
            "print(job.status)",
        ],
        env,
        tmp_path,
    )

    last = notebook.cells[-1]
    assert "".join(o.get("text", "") for o in last.outputs).strip() == "succeeded"
    snapshot = job_snapshot(notebook.cells[1])
    for mime in ("text/markdown", "text/html"):
        assert "succeeded" in snapshot[mime], f"{mime} still says: {snapshot[mime]}"
        assert "queued" not in snapshot[mime] and "running" not in snapshot[mime], snapshot[mime]
        assert "echo: Quick headless answer" in snapshot[mime], snapshot[mime]
    assert "succeeded" in snapshot["text/plain"]


def updates_of(kernel: KernelHarness, display_id: str) -> list[str]:
    """The parent request of every update of one display, in order."""
    return [
        m["parent_header"].get("msg_id")
        for m in kernel.messages
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == display_id
    ]


def display_id_of(run: Any) -> str:
    [shown] = [m for m in run.messages if m["msg_type"] == "display_data"]
    return str(shown["content"]["transient"]["display_id"])


async def test_an_update_is_sent_again_once_and_only_when_it_went_out_elsewhere(
    kernel_factory: Any, fake_env: dict[str, str], tmp_path: Path
) -> None:
    kernel: KernelHarness = await kernel_factory(
        {**fake_env, "LLMGW_DATA_DIR": str(tmp_path / "data")}
    )
    await kernel.execute("%load_ext llmgw_jupyter")

    started = await kernel.execute(f"job = %codex_async --cd {tmp_path} Followed")
    waited = await kernel.execute(AWAIT_THE_FOLLOW_TASK)
    for _ in range(2):
        await kernel.execute("1")
    followed = display_id_of(started)
    assert updates_of(kernel, followed) == [started.msg_id, waited.msg_id], (
        "the follow task's update, then once more from the cell it went out during"
    )

    in_cell = await kernel.execute(
        f"inline = %codex_async --cd {tmp_path} Waited in its cell\nassert inline.wait(60)"
    )
    await kernel.execute("1")
    assert updates_of(kernel, display_id_of(in_cell)) == [in_cell.msg_id], (
        "sent under the cell that ran: its client has it, nothing to send again"
    )

    hooked = (
        "from llmgw_jupyter.kernel.tasks import resend_display_updates as _resend\n"
        "[_resend in get_ipython().events.callbacks[e] for e in ('pre_run_cell', 'post_run_cell')]"
    )
    assert (await kernel.execute(hooked)).data("text/plain") == ["[True, True]"]
    await kernel.execute("%unload_ext llmgw_jupyter")
    assert (await kernel.execute(hooked)).data("text/plain") == ["[False, False]"], (
        "unloading removes the hooks"
    )
