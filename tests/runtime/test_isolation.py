"""The isolation boundary, proven with the real Codex CLI: a model that obeys the prompt runs
shell commands (the mock's ``[mock-shell]`` directive), and what those commands print is what a
grant would get back. Nothing of the owner's may be in it.

The runtime's own rules (protected working dirs, no unisolated grant jobs, private files, the
wall limit) hold for any CLI: those tests run the fake provider and need no Codex."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import RuntimeFactory

from llmgw_jupyter.errors import ErrorCategory, GatewayError
from llmgw_jupyter.runtime import JobRecord, JobSpec, JobStatus, Runtime
from llmgw_jupyter.runtime.isolation import BWRAP_PATH_ENV, Boundary
from llmgw_jupyter.testing.fake_provider import FakeProvider

CODEX_WAIT = 90
OWNER_TOKEN = "jupyter-owner-token-5f1d"
OWNER_KEY = "sk-owner-api-key-77aa"
HUB_TOKEN = "hub-token-31c9"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An owner's machine in miniature: a Jupyter runtime dir holding the server's token file,
    secrets in the server's environment, and a workspace that contains the runtime dir (as when
    Jupyter runs from $HOME)."""
    work = tmp_path / "work"
    runtime_dir = work / ".jupyter-runtime"
    runtime_dir.mkdir(parents=True)
    (runtime_dir / "jpserver-4242.json").write_text(json.dumps({"token": OWNER_TOKEN}))
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime_dir))
    monkeypatch.setenv("OPENAI_API_KEY", OWNER_KEY)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("JPY_API_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("LLMGW_SERVER_TOKEN", OWNER_TOKEN)
    return {"work": work, "outside": outside, "data": work / "gateway-data"}


@pytest.fixture
async def isolated(
    runtime: RuntimeFactory, codex_path: str, codex_home: Path, world: dict[str, Path]
) -> Runtime:
    (codex_home / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": OWNER_KEY}))
    return await runtime(
        codex_path=codex_path,
        codex_home=str(codex_home),
        data_dir=world["data"],  # inside the workspace, as a careless set-up would have it
        isolation="bwrap",
    )


@pytest.fixture
async def fake_isolated(runtime: RuntimeFactory, world: dict[str, Path]) -> Runtime:
    """The same boundary and careless data dir, running the fake CLI."""
    return await runtime(
        providers={"fake": FakeProvider()}, data_dir=world["data"], isolation="bwrap"
    )


def fake_spec(args: dict[str, Any], caller: str = "owner") -> JobSpec:
    return JobSpec("fake", "fake_request_async", "exec", {"prompt": "hi", **args}, caller=caller)


async def shell_job(
    rt: Runtime, command: str, workdir: Path, caller: str = "grant:bot", **args: Any
) -> JobRecord:
    spec = JobSpec(
        "codex",
        "codex_request_async",
        args.pop("kind", "exec"),
        {"prompt": f"[mock-shell]{command}[/mock-shell]", "working_dir": str(workdir), **args},
        caller=caller,
    )
    job = await rt.submit(spec)
    done = await rt.wait_finished(job.id, CODEX_WAIT)
    assert done.status is JobStatus.SUCCEEDED, (done.status, done.error_message)
    assert done.final_message is not None and done.final_message.startswith("shell output:")
    return done


async def test_a_grants_commands_see_no_owner_secret(
    isolated: Runtime, world: dict[str, Path], codex_home: Path
) -> None:
    owner_job = await shell_job(isolated, "echo owner was here", world["work"], caller="owner")
    assert "owner was here" in (owner_job.final_message or "")
    probe = (
        "echo PROBE-START; env; cat /proc/[0-9]*/environ 2>&1 | tr '\\0' '\\n'; "
        f"cat .jupyter-runtime/jpserver-4242.json {world['data']}/llmgw.sqlite3 "
        f"{codex_home}/auth.json $CODEX_HOME/auth.json ~/.codex/auth.json 2>&1; "
        f"ls -la {world['data']} .jupyter-runtime {codex_home} 2>&1; "
        "find / -name 'rollout-*' -o -name 'jpserver-*' 2>/dev/null; echo PROBE-END"
    )
    done = await shell_job(isolated, probe, world["work"])

    seen = done.final_message or ""
    assert "PROBE-START" in seen and "PROBE-END" in seen  # the command really ran
    for secret in (OWNER_TOKEN, OWNER_KEY, HUB_TOKEN, "owner was here"):
        assert secret not in seen, f"{secret!r} reached the grant's command output"
    assert owner_job.session_id and owner_job.session_id not in seen  # the owner's sessions


async def test_the_sandbox_stays_the_gateways_on_exec_resume_and_fork(
    isolated: Runtime, world: dict[str, Path]
) -> None:
    target = world["outside"] / "escaped"
    inside = world["work"] / "written-in-a-read-only-job"
    first = await shell_job(isolated, f"touch {target}; echo done", world["work"])
    assert not target.exists()
    for kind in ("resume", "fork"):
        with pytest.raises(GatewayError) as refused:
            await isolated.submit(
                JobSpec(
                    "codex",
                    "codex_request_async",
                    kind,
                    {
                        "prompt": f"[mock-shell]touch {target}[/mock-shell]",
                        "session_id": first.session_id,
                        "config_overrides": {"default_permissions": ":danger-full-access"},
                    },
                    caller="grant:bot",
                )
            )
        assert refused.value.field == "config_overrides"
        assert "default_permissions" in refused.value.message
        again = await shell_job(
            isolated,
            f"touch {target} {inside} 2>&1; echo $?",
            world["work"],
            kind=kind,
            session_id=first.session_id,
            config_overrides={"model_reasoning_effort": "low"},
        )
        assert not target.exists(), f"{kind} wrote outside the workspace"
        assert not inside.exists(), f"{kind} wrote in a read-only job's workspace"
        assert "Read-only file system" in (again.final_message or "")


async def test_grants_keep_their_sessions_to_themselves(
    isolated: Runtime, world: dict[str, Path]
) -> None:
    mine = await shell_job(isolated, "echo secret plan of alice", world["work"], "grant:alice")
    snoop = await shell_job(
        isolated,
        "find / -name 'rollout-*' 2>/dev/null | xargs cat 2>/dev/null; ls -R /llmgw 2>&1",
        world["work"],
        "grant:bob",
    )
    assert mine.session_id is not None
    assert "secret plan of alice" not in (snoop.final_message or "")
    assert mine.session_id not in (snoop.final_message or "")


async def test_working_in_a_protected_directory_is_refused(
    fake_isolated: Runtime, world: dict[str, Path]
) -> None:
    for directory in (world["data"], world["work"] / ".jupyter-runtime"):
        with pytest.raises(GatewayError) as refused:
            await fake_isolated.submit(fake_spec({"working_dir": str(directory)}, "grant:bot"))
        assert refused.value.category is ErrorCategory.INVALID_INPUT
        assert refused.value.field == "working_dir"


async def test_grants_jobs_never_run_unisolated(runtime: RuntimeFactory, tmp_path: Path) -> None:
    off = await runtime(providers={"fake": FakeProvider()}, isolation="off")
    with pytest.raises(GatewayError) as refused:
        await off.submit(fake_spec({}, "grant:x"))
    assert refused.value.category is ErrorCategory.ISOLATION_ERROR
    assert "isolation" in off.isolation_report()

    missing = await runtime(
        providers={"fake": FakeProvider()},
        data_dir=tmp_path / "data2",
        bwrap_path=str(tmp_path / "no-bwrap-here"),
        isolation="bwrap",
    )
    with pytest.raises(GatewayError) as unavailable:
        await missing.submit(fake_spec({}, "grant:x"))
    assert unavailable.value.category is ErrorCategory.ISOLATION_ERROR
    assert "UNAVAILABLE" in missing.isolation_report()


async def test_data_at_rest_is_private_whatever_the_umask(
    fake_isolated: Runtime, world: dict[str, Path]
) -> None:
    old = os.umask(0)
    try:
        job = await fake_isolated.submit(fake_spec({"working_dir": str(world["work"])}))
        done = await fake_isolated.wait_finished(job.id, CODEX_WAIT)
    finally:
        os.umask(old)
    assert done.status is JobStatus.SUCCEEDED, (done.status, done.error_message)
    data = world["data"]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "llmgw.sqlite3").stat().st_mode) == 0o600
    job_dir = fake_isolated.job_dir(done.id)
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    for path in job_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_timeout_past_the_servers_wall_limit_is_refused(runtime: RuntimeFactory) -> None:
    rt = await runtime(providers={"fake": FakeProvider()}, wall_timeout_seconds=60)
    with pytest.raises(GatewayError) as refused:
        await rt.submit(fake_spec({"timeout_seconds": 61}))
    assert refused.value.field == "timeout_seconds"
    assert "wall_timeout_seconds" in refused.value.message


@pytest.mark.parametrize(
    "key",
    [
        "default_permissions",
        "permissions.x.filesystem",
        "openai_base_url",
        "chatgpt_base_url",
        "otel.exporter",
        "experimental_use_freeform_apply_patch",
        "features.web_search_request",
        "sqlite_home",
        "log_dir",
        "agents.x",
        "model_catalog_json",
        "js_repl_node_path",
        "zsh_path",
        "marketplaces.x",
        "plugins.x",
        "apps.x",
        "web_search",
        "developer_instructions",
        "instructions",
        "cli_auth_credentials_store",
        "shell_environment_policy.inherit",
        "sandbox_mode",
        "model_provider",
        "mcp_servers.x.command",
        "notify",
        "hooks.x",
        "profile",
        "projects.x.trust_level",
        "brand_new_key_of_a_future_release",
    ],
)
async def test_config_overrides_are_an_allow_list(
    runtime: RuntimeFactory, codex_path: str, codex_home: Path, key: str
) -> None:
    rt = await runtime(codex_path=codex_path, codex_home=str(codex_home))
    with pytest.raises(GatewayError) as refused:
        await rt.submit(
            JobSpec(
                "codex",
                "codex_request_async",
                "exec",
                {"prompt": "hi", "config_overrides": {key: "x"}},
            )
        )
    assert refused.value.field == "config_overrides"
    assert repr(key) in refused.value.message
    assert "codex_config_keys" in refused.value.message  # how the owner widens it


async def test_the_owner_can_widen_the_config_allow_list(
    runtime: RuntimeFactory, codex_path: str, codex_home: Path, tmp_path: Path
) -> None:
    rt = await runtime(
        codex_path=codex_path, codex_home=str(codex_home), codex_config_keys=["tui.theme"]
    )
    job = await rt.submit(
        JobSpec(
            "codex",
            "codex_request_async",
            "exec",
            {"prompt": "hi", "working_dir": str(tmp_path), "config_overrides": {"tui.theme": "x"}},
        )
    )
    assert job.args["config_overrides"] == {"tui.theme": "x"}


async def test_grants_work_only_under_the_owners_grant_roots(
    runtime: RuntimeFactory, codex_path: str, codex_home: Path, tmp_path: Path
) -> None:
    """A grant asking for "/" would otherwise get the whole machine (minus protected paths)."""
    root = tmp_path / "root"
    (root / "project").mkdir(parents=True)
    rt = await runtime(
        codex_path=codex_path,
        codex_home=str(codex_home),
        grant_roots=[str(root)],
        isolation="bwrap",
    )
    for args in (
        {"working_dir": "/"},
        {"working_dir": str(tmp_path)},
        {"working_dir": str(root / "project"), "add_dirs": ["/etc"]},
    ):
        with pytest.raises(GatewayError) as refused:
            await rt.submit(
                JobSpec("codex", "codex_request_async", "exec", {"prompt": "hi", **args}, "grant:x")
            )
        assert "c.LLMGatewayApp.grant_roots" in refused.value.message
        assert refused.value.field in ("working_dir", "add_dirs")
    inside = await rt.submit(
        JobSpec(
            "codex", "codex_request_async", "exec",
            {"prompt": "hi", "working_dir": str(root / "project")}, "grant:x",
        )
    )  # fmt: skip
    assert inside.working_dir == str(root / "project")
    default = await rt.submit(
        JobSpec("codex", "codex_request_async", "exec", {"prompt": "hi"}, "grant:x")
    )
    assert default.working_dir == str(root)  # a grant works in the first root by default
    owner = await rt.submit(
        JobSpec("codex", "codex_request_async", "exec", {"prompt": "hi", "working_dir": "/tmp"})
    )
    assert owner.working_dir == "/tmp"  # the owner is not limited by grant_roots


def test_bubblewrap_is_looked_up_on_path_until_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BWRAP_PATH_ENV, raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    boundary = Boundary()
    assert boundary.executable is None  # not installed (yet): asked again next time

    bwrap = bin_dir / "bwrap"
    bwrap.write_text("#!/bin/sh\n")
    bwrap.chmod(0o755)
    assert boundary.executable == str(bwrap)
    bwrap.unlink()
    assert boundary.executable == str(bwrap)  # found once: remembered for this PATH


def test_inside_checks_compare_whole_path_components() -> None:
    protected = [Path("/srv/data"), Path("/")]
    boundary = Boundary(protected=protected[:1])
    boundary.check_path("working_dir", "/srv/database")  # a sibling sharing a prefix: allowed
    for inside in ("/srv/data", "/srv/data/jobs/x"):
        with pytest.raises(GatewayError):
            boundary.check_path("working_dir", inside)
    with pytest.raises(GatewayError):
        Boundary(protected=protected[1:]).check_path("working_dir", "/anything")
