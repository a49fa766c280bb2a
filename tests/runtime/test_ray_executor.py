"""The Ray executor against a real local Ray head (one per test session, loopback only, token auth).

Skipped only when the ``ray`` extra is not installed. The head is ``ray start --head --block``
with every port chosen here (``ray.init(address="local")`` cannot set the dashboard agent's
ports, and a second head on the machine, e.g. another test run, then leaves this one with "No
available agent"); SIGTERM to that command shuts down this head alone (``ray stop`` would stop
every Ray process on the machine)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import WAIT, RuntimeFactory, assert_fake_answer_complete, spec

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.providers.base import Mounts
from llmgw_jupyter.records import JobRecord, JobSpec, JobStatus
from llmgw_jupyter.runtime import Runtime
from llmgw_jupyter.runtime.config import RuntimeConfig
from llmgw_jupyter.runtime.executor import LaunchRequest
from llmgw_jupyter.runtime.ray_executor import (
    RayExecution,
    RayExecutor,
    entrypoint_for,
    env_script,
    ray_unavailable_reason,
)
from llmgw_jupyter.testing.fake_provider import FakeProvider
from llmgw_jupyter.testing.mock_responses import MockResponsesServer

HEAD_START_SECONDS = 60.0
PORT_OPTIONS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)


@dataclasses.dataclass(frozen=True)
class RayHead:
    address: str
    token_path: Path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _head_command(temp_dir: Path) -> tuple[list[str], int]:
    """``ray start --head --block`` on loopback, bounded for 2 cores; and its dashboard port."""
    ray = Path(sys.executable).parent / "ray"
    ports = _free_ports(len(PORT_OPTIONS))
    command = [str(ray if ray.exists() else shutil.which("ray") or "ray"), "start", "--head"]
    command += ["--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1"]
    command += [f"{option}={port}" for option, port in zip(PORT_OPTIONS, ports, strict=True)]
    command += ["--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000"]
    command += [f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-log-monitor=false"]
    return command, ports[1]


def _wait_for_agent(head: RayHead, deadline: float) -> None:
    """The dashboard answers before its agent takes jobs: one trivial job proves both."""
    from ray.job_submission import JobSubmissionClient

    token = head.token_path.read_text()
    client = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {token}"})
    while True:
        try:
            job = client.submit_job(entrypoint="true", entrypoint_num_cpus=0)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while str(client.get_job_status(job)).rsplit(".", 1)[-1] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, "the Ray head did not run a first job"
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True  # 401 without the token: the head is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    reason = ray_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    temp_dir = Path(tempfile.mkdtemp(prefix="llmgw-ray-"))
    token_path = temp_dir / "token"
    token_path.write_text(secrets.token_hex(24))
    token_path.chmod(0o600)
    command, port = _head_command(temp_dir / "t")
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray leaves loopback
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",  # explicit: never anything on loopback running commands
        "RAY_AUTH_TOKEN_PATH": str(token_path),
    }
    owner = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(temp_dir / "owner.log", "wb"),  # noqa: SIM115 - the owner holds it
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HEAD_START_SECONDS
        while not _answers(f"{address}/api/version"):
            if owner.poll() is not None or time.monotonic() > deadline:
                log = (temp_dir / "owner.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the Ray head did not start: {log}")
            time.sleep(0.25)
        head = RayHead(address, token_path)
        _wait_for_agent(head, deadline)
        yield head
    finally:
        owner.send_signal(signal.SIGTERM)  # it drains and stops the processes it started
        try:
            owner.wait(45)
        except subprocess.TimeoutExpired:
            owner.kill()
            owner.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def on_ray(runtime: RuntimeFactory, ray_head: RayHead) -> RuntimeFactory:
    """Runtimes on one data dir running the fake CLI as Ray jobs on the session's head."""

    async def make(**config: Any) -> Runtime:
        config.setdefault("providers", {"fake": FakeProvider()})
        config.setdefault("kill_grace_seconds", 1.0)
        return await runtime(
            executor="ray",
            ray_address=ray_head.address,
            ray_auth_token_path=str(ray_head.token_path),
            **config,
        )

    return make


def ray_status(rt: Runtime, job_id: str) -> str:
    assert isinstance(rt.executor, RayExecutor)
    return str(rt.executor._connect().get_job_status(job_id)).rsplit(".", 1)[-1]


async def first_progress(rt: Runtime, job_id: str) -> JobRecord:
    seq = 0
    deadline = asyncio.get_running_loop().time() + WAIT
    while asyncio.get_running_loop().time() < deadline:
        events, record = await rt.wait_for_events(job_id, seq, WAIT)
        if any(e.type in ("fake.progress", "fake.session") for e in events):
            return record
        assert not record.is_terminal, record.error_message
        seq = events[-1].seq if events else seq
    pytest.fail(f"job {job_id} printed nothing")


def assert_complete(rt: Runtime, record: JobRecord, steps: int) -> None:
    """The whole answer and gap-free events, with only the CLI's lines in its stdout file."""
    assert_fake_answer_complete(rt, record, steps)
    stdout = rt.job_dir(record.id) / "stdout.jsonl"
    assert record.stdout_bytes == stdout.stat().st_size
    assert b"Running entrypoint" not in stdout.read_bytes()  # Ray's header is dropped


# -- without a head ------------------------------------------------------------------------------
def _request(tmp_path: Path, **changes: Any) -> LaunchRequest:
    request = LaunchRequest(
        job_id="job1",
        job_dir=tmp_path,
        argv=["/bin/echo", "a b", "$(touch pwned)", "'; rm -rf / #"],
        cwd=str(tmp_path / "work dir"),
        env={"PATH": "/usr/bin:/bin", "SECRET": "s3cr$t 'x'"},
        stdin=b"prompt",
        isolated=False,
        mounts=Mounts(),
    )
    return dataclasses.replace(request, **changes)


def test_the_entrypoint_quotes_every_argument_and_holds_no_environment(tmp_path: Path) -> None:
    request = _request(tmp_path)
    line = entrypoint_for(
        request,
        nonce="0123abcd",
        env_file=tmp_path / "env.sh",
        prompt_file=tmp_path / "prompt",
        stderr_file=tmp_path / "stderr.log",
    )
    assert "s3cr" not in line  # values live in the 0600 env file, not in what Ray shows
    words = shlex.split(line)
    assert words[words.index("cd") + 1] == str(tmp_path / "work dir")
    start = words.index(str(tmp_path / "env.sh")) + 1
    assert words[start : start + 4] == request.argv
    script = env_script(request.env)
    out = subprocess.run(
        ["/bin/sh", "-c", f'{script} printf %s "$SECRET"'], capture_output=True, check=True
    )
    assert out.stdout == b"s3cr$t 'x'"


async def test_rays_lines_are_dropped_wherever_ray_wrote_them(tmp_path: Path) -> None:
    """Ray appends its "Running entrypoint" line after starting the entrypoint: it can land
    before the start line, after the CLI's first output, or inside a line the CLI is writing."""
    executor = RayExecutor(RuntimeConfig(executor="ray", ray_address="http://127.0.0.1:9"))
    execution = RayExecution(
        executor,
        job_dir=tmp_path,
        submission_id="j1",
        entrypoint="the entrypoint",
        nonce="0123abcd",
        argv=[],
    )
    header = "Running entrypoint for job j1: the entrypoint\n"
    setup = "2026-12-02 INFO job_manager.py -- Runtime env is setting up.\n"
    start = "llmgw-ray-start-0123abcd\n"
    body = '{"a": 1}\n{"b": 2}\nno newline at the end'
    for log in (
        setup + header + start + body,
        setup + start + '{"a": 1}\n' + header + '{"b": 2}\nno newline at the end',
        setup + start + '{"a"' + header + ': 1}\n{"b": 2}\nno newline at the end',
    ):
        for size in (1, 7, len(log)):
            chunks = [log[i : i + size] for i in range(0, len(log), size)]

            async def tail(chunks: list[str] = chunks) -> AsyncIterator[str]:
                for chunk in chunks:
                    yield chunk

            got = [data async for _, data in execution._stdout._body(tail())]
            assert b"".join(got).decode() == body, (log, size)


def test_a_bad_variable_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="env"):
        env_script({"A;B": "x"})


async def test_an_isolated_job_is_refused_unless_the_owner_opted_in(tmp_path: Path) -> None:
    executor = RayExecutor(RuntimeConfig(executor="ray", ray_address="http://127.0.0.1:9"))
    with pytest.raises(GatewayError) as refused:
        await executor.launch(_request(tmp_path, isolated=True))
    assert refused.value.category is ErrorCategory.ISOLATION_ERROR
    assert not (tmp_path / "ray.json").exists()  # nothing was submitted


# -- on a real head ------------------------------------------------------------------------------
async def test_a_job_round_trip_with_progress_events(on_ray: RuntimeFactory) -> None:
    rt = await on_ray()
    started = time.monotonic()
    done = await rt.wait_finished((await rt.submit(spec("hi [fake:events=3]"))).id, WAIT)
    assert_complete(rt, done, 3)
    assert done.final_message == "echo: hi"
    assert ray_status(rt, done.id) == "SUCCEEDED"
    assert time.monotonic() - started < WAIT


async def test_a_failing_cli_fails_the_job_with_its_exit_code(on_ray: RuntimeFactory) -> None:
    rt = await on_ray()
    done = await rt.wait_finished((await rt.submit(spec("[fake:fail=boom]"))).id, WAIT)
    assert done.status is JobStatus.FAILED and done.exit_code == 1, done.error_message
    assert ray_status(rt, done.id) == "FAILED"


async def test_cancel_stops_the_ray_job(on_ray: RuntimeFactory) -> None:
    rt = await on_ray()
    job = await rt.submit(spec("[fake:hang]"))
    await first_progress(rt, job.id)
    cancelled = await rt.cancel(job.id, "enough")
    done = await rt.wait_finished(job.id, WAIT)
    assert done.status is JobStatus.CANCELLED and cancelled.cancel_reason == "enough"
    assert ray_status(rt, job.id) == "STOPPED"


async def test_a_restarted_runtime_follows_the_ray_job_to_its_end(on_ray: RuntimeFactory) -> None:
    first = await on_ray()
    job = await first.submit(spec("long answer [fake:events=25,step_delay=0.1]"))
    await first_progress(first, job.id)
    await first.close()
    assert ray_status(first, job.id) in ("RUNNING", "SUCCEEDED")

    second = await on_ray()
    done = await second.wait_finished(job.id, WAIT)
    assert_complete(second, done, 25)
    assert done.final_message == "echo: long answer"


async def test_a_ray_job_that_ended_while_no_runtime_was_up_is_settled_on_start(
    on_ray: RuntimeFactory,
) -> None:
    first = await on_ray()
    job = await first.submit(spec("settle me [fake:events=4,step_delay=0.2]"))
    await first_progress(first, job.id)
    await first.close()
    deadline = time.monotonic() + WAIT
    while ray_status(first, job.id) != "SUCCEEDED":
        assert time.monotonic() < deadline, "the Ray job did not end"
        await asyncio.sleep(0.2)

    second = await on_ray()
    done = await second.wait_finished(job.id, WAIT)
    assert_complete(second, done, 4)
    assert done.final_message == "echo: settle me"


async def test_the_output_cap_holds_on_disk(on_ray: RuntimeFactory) -> None:
    rt = await on_ray(output_cap_bytes=1500)
    done = await rt.wait_finished((await rt.submit(spec("[fake:events=200]"))).id, WAIT)
    assert done.status is JobStatus.FAILED
    assert done.error_category == ErrorCategory.OUTPUT_OVERFLOW.value
    on_disk = sum(
        (rt.job_dir(done.id) / name).stat().st_size for name in ("stdout.jsonl", "stderr.log")
    )
    assert on_disk == done.stdout_bytes + done.stderr_bytes == 1500


async def test_a_codex_job_round_trip_against_the_mock_model(
    runtime: RuntimeFactory,
    ray_head: RayHead,
    codex_path: str,
    codex_home: Path,
    mock_model: MockResponsesServer,
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    rt = await runtime(
        executor="ray",
        ray_address=ray_head.address,
        ray_auth_token_path=str(ray_head.token_path),
        codex_path=codex_path,
        codex_home=str(codex_home),
    )
    job = await rt.submit(
        JobSpec(
            "codex",
            "codex_request_async",
            "exec",
            {"prompt": "say hello over ray", "working_dir": str(workdir)},
        )
    )
    done = await rt.wait_finished(job.id, 2 * WAIT)
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.final_message == "echo: say hello over ray"
    assert done.session_id is not None and done.exit_code == 0
    assert mock_model.requests[-1].last_user_text == "say hello over ray"
    assert ray_status(rt, job.id) == "SUCCEEDED"
