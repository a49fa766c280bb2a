"""Hot reload: good files replace the policy, bad ones keep the last good; start fails closed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from llmgw_jupyter.policy import PolicySource, PolicyValidationError

GOOD_A = {"version": "1", "default": "deny", "tools": {"a": {}}}
GOOD_B = {"version": "1", "default": "deny", "tools": {"b": {}}}


def write(path: Path, data: Any) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    write(path, GOOD_A)
    return path


def test_start_with_a_bad_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    write(path, {"version": "2"})
    with pytest.raises(PolicyValidationError, match='/version: must be "1"'):
        PolicySource(path)
    with pytest.raises(FileNotFoundError):
        PolicySource(tmp_path / "missing.json")
    write(path, "{not json")
    with pytest.raises(PolicyValidationError, match="invalid JSON"):
        PolicySource(path)


def test_no_path_is_the_allow_all_owner_default() -> None:
    source = PolicySource(None)
    assert source.policy.default == "allow" and source.policy.tools == {}
    assert source.check() is False and source.last_error is None


def test_check_reloads_good_and_keeps_last_good_on_bad(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    assert set(source.policy.tools) == {"a"}
    assert source.check() is False  # nothing changed
    write(policy_file, GOOD_B)
    assert source.check() is True
    assert set(source.policy.tools) == {"b"} and source.last_error is None
    write(policy_file, {"version": "1", "tools": {"c": {"limits": [{"counter": "x"}]}}})
    assert source.check() is True
    assert set(source.policy.tools) == {"b"}
    assert source.last_error is not None
    assert "/tools/c/limits/0/window: is required" in source.last_error
    write(policy_file, GOOD_A)
    assert source.check() is True
    assert set(source.policy.tools) == {"a"} and source.last_error is None


def test_quick_same_size_rewrite_is_seen(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    stat = os.stat(policy_file)
    same_size = json.dumps(GOOD_A).replace('"a"', '"z"')
    write(policy_file, same_size)
    os.utime(policy_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, same size
    assert source.check() is True
    assert set(source.policy.tools) == {"z"}


def test_atomic_replace_is_seen(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    replacement = policy_file.with_suffix(".tmp")
    write(replacement, GOOD_B)
    os.replace(replacement, policy_file)
    assert source.check() is True and set(source.policy.tools) == {"b"}


def test_missing_file_keeps_the_policy_and_recovers(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    policy_file.unlink()
    assert source.check() is True
    assert source.last_error is not None and "missing" in source.last_error
    assert set(source.policy.tools) == {"a"}
    assert source.check() is False  # reported once
    write(policy_file, GOOD_A)
    assert source.check() is True and source.last_error is None


async def test_background_watch_reloads_good_and_bad_files(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    reloaded = asyncio.Event()
    source.add_listener(lambda _src: reloaded.set())
    await source.start()
    try:
        write(policy_file, GOOD_B)
        await asyncio.wait_for(reloaded.wait(), timeout=10)
        assert set(source.policy.tools) == {"b"} and source.last_error is None
        reloaded.clear()
        generation = source.generation
        write(policy_file, '{"version": "1", "tools": {"x": {"action": "sometimes"}}}')
        await asyncio.wait_for(reloaded.wait(), timeout=10)
        assert source.generation == generation + 1
        assert source.last_error is not None
        assert "/tools/x/action: must be 'allow', 'deny' or 'require_approval'" in (
            source.last_error
        )
        assert set(source.policy.tools) == {"b"}  # last good policy still in force
    finally:
        await source.stop()


async def test_a_failing_listener_does_not_stop_the_watch(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    seen = asyncio.Event()

    def broken(_src: PolicySource) -> None:
        raise RuntimeError("boom")

    source.add_listener(broken)
    source.add_listener(lambda _src: seen.set())
    await source.start()
    try:
        write(policy_file, GOOD_B)
        await asyncio.wait_for(seen.wait(), timeout=10)
        seen.clear()
        write(policy_file, json.dumps(GOOD_A) + " ")
        await asyncio.wait_for(seen.wait(), timeout=10)
        assert set(source.policy.tools) == {"a"}
    finally:
        await source.stop()


class Reloads:
    """Each reload attempt the watcher makes, awaited one at a time (no sleeping)."""

    def __init__(self, source: PolicySource) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        source.add_listener(lambda src: self.queue.put_nowait(src.generation))

    async def next(self) -> int:
        return await asyncio.wait_for(self.queue.get(), timeout=10)


async def test_watch_sees_an_editors_atomic_replace(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    reloads = Reloads(source)
    await source.start()
    try:
        replacement = policy_file.with_name(".policy.json.swp")
        write(replacement, GOOD_B)
        os.replace(replacement, policy_file)
        await reloads.next()
        assert set(source.policy.tools) == {"b"} and source.last_error is None
    finally:
        await source.stop()


async def test_watch_sees_deletion_and_recreation(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    reloads = Reloads(source)
    await source.start()
    try:
        policy_file.unlink()
        await reloads.next()
        assert source.last_error is not None and "missing" in source.last_error
        assert set(source.policy.tools) == {"a"}  # fail closed: the last good policy stays
        write(policy_file, GOOD_B)
        await reloads.next()
        assert set(source.policy.tools) == {"b"} and source.last_error is None
    finally:
        await source.stop()


async def test_watch_survives_its_directory_being_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    policy_file = directory / "policy.json"
    write(policy_file, GOOD_A)
    source = PolicySource(policy_file)
    reloads = Reloads(source)
    await source.start()
    try:
        shutil.rmtree(directory)
        await reloads.next()
        assert source.last_error is not None and "missing" in source.last_error
        directory.mkdir()
        write(policy_file, GOOD_B)
        await reloads.next()
        assert set(source.policy.tools) == {"b"} and source.last_error is None
    finally:
        await source.stop()


async def test_watch_follows_a_retargeted_symlink(tmp_path: Path) -> None:
    """The ConfigMap pattern: the file is a link through ``..data``, which is swapped."""
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir()
    second.mkdir()
    write(first / "policy.json", GOOD_A)
    write(second / "policy.json", GOOD_B)
    (tmp_path / "..data").symlink_to("v1")
    policy_file = tmp_path / "policy.json"
    policy_file.symlink_to("..data/policy.json")
    source = PolicySource(policy_file)
    reloads = Reloads(source)
    await source.start()
    try:
        (tmp_path / "..data_tmp").symlink_to("v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await reloads.next()
        assert set(source.policy.tools) == {"b"} and source.last_error is None
        write(second / "policy.json", GOOD_A)  # an edit in the link's new target directory
        await reloads.next()
        assert set(source.policy.tools) == {"a"}
    finally:
        await source.stop()


async def test_a_change_before_start_is_seen_at_start(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    write(policy_file, GOOD_B)
    await source.start()
    try:
        assert set(source.policy.tools) == {"b"}
    finally:
        await source.stop()


async def test_stop_ends_the_watch_and_start_again_works(policy_file: Path) -> None:
    source = PolicySource(policy_file)
    reloads = Reloads(source)
    await source.start()
    await source.stop()
    await source.stop()  # idempotent
    await source.start()
    try:
        write(policy_file, GOOD_B)
        await reloads.next()
        assert set(source.policy.tools) == {"b"}
    finally:
        await source.stop()
