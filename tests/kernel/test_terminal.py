"""Terminal IPython: no widgets, compact text progress, the answer as text (the fake CLI behind
Codex's tools runs the jobs: any job will do)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


def test_terminal_ipython_prints_compact_progress_and_the_answer(
    fake_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fake_env, "LLMGW_DATA_DIR": str(tmp_path / "data")}
    lines = [
        "%load_ext llmgw_jupyter",
        "%codex_async --wait Terminal [fake:events=2,step_delay=0.2]",
        "job = %codex_async Later",
        "print('answer:', job.result(60).final_message)",
        "job",
        "%llm_approvals",
        "exit",
    ]
    done = subprocess.run(
        [
            Path(sys.executable).parent / "ipython",
            "--no-banner",
            "--colors=NoColor",
            "--simple-prompt",
        ],
        input="\n".join(lines) + "\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "llmgw: LLMGW_SERVER_URL is not set; using an embedded gateway in this process" in out
    job_id = re.search(r"codex job (\w{12}) · \w+ · [\d.]+ s · Terminal", out)
    assert job_id is not None, out
    progress = [line for line in out.splitlines() if line.startswith(f"[{job_id.group(1)}]")]
    kinds = [line.split("]")[1].split(":")[0].strip() for line in progress]
    assert kinds.count("fake.progress") == 2
    assert kinds[-1] == "job.status" and progress[-1].endswith("succeeded")
    assert "echo: Terminal\njob " in out, "the answer, then figures"
    assert re.search(r"tokens: [\d,]+ in", out)
    assert "answer: echo: Later" in out
    assert re.search(r"codex job \w{12} · succeeded · [\d.]+ s · session \S+ · echo: Later", out)
    assert "no pending approvals" in out
    assert "Traceback" not in out + done.stderr
    assert "widget" not in out.lower()
