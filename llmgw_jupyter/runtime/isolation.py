"""The boundary around every job: a bubblewrap view of the filesystem holding only what it may use.

Codex's own sandbox restricts writes and network, not reads: without this boundary a read-only job
reads the owner's Jupyter token (``jpserver-*.json``), ``auth.json`` and every caller's data in
the gateway's data dir. Inside the boundary the root is an empty tmpfs; the system directories
are mounted read-only, the job's working dir and ``add_dirs`` read-write (Codex's sandbox narrows
writes further), the caller's own Codex home at a fixed path, and nothing else. Protected paths
(the data dir, Jupyter's runtime and config dirs, credential files) are masked even when they lie
inside a directory the job may use.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from llmgw_jupyter.errors import ErrorCategory, GatewayError, InvalidInputError
from llmgw_jupyter.providers.base import Mounts

BWRAP_PATH_ENV = "LLMGW_BWRAP_PATH"
INSIDE_ROOT = "/llmgw"
INSIDE_HOME = f"{INSIDE_ROOT}/home"  # HOME of the job: an empty tmpfs
SYSTEM_READ_ONLY = ("/usr", "/etc")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Credential and state files of the owner that no job needs. Relative entries are under $HOME.
DEFAULT_PROTECTED = (
    ".codex",
    ".jupyter",
    ".local/share/jupyter",
    ".ipython",
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".claude",
    ".claude.json",
    "/etc/jupyter",
    "/usr/local/etc/jupyter",
    "/etc/shadow",
    "/etc/gshadow",
)


class IsolationError(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCategory.ISOLATION_ERROR, message)


def protected_paths(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The default protected set (under $HOME and system-wide) plus the gateway's own dirs."""
    home = Path.home()
    paths = [Path(p) if p.startswith("/") else home / p for p in DEFAULT_PROTECTED]
    try:
        from jupyter_core.paths import (  # light: no server machinery
            jupyter_config_dir,
            jupyter_data_dir,
            jupyter_runtime_dir,
        )

        paths += [Path(jupyter_runtime_dir()), Path(jupyter_config_dir()), Path(jupyter_data_dir())]
    except ImportError:  # pragma: no cover - jupyter_core is a dependency
        pass
    paths += [Path(p) for p in extra]
    unique: dict[str, Path] = {}
    for path in paths:
        resolved = _resolve(path)
        unique.setdefault(str(resolved), resolved)
    return list(unique.values())


def _resolve(path: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _inside(path: Path, parent: Path) -> bool:
    """``parent in path.parents`` for resolved paths, as strings: pathlib's version cost the
    event loop about a millisecond per isolated job (some 160 checks of each job's mounts)."""
    child, top = str(path), str(parent)
    return child == top or child.startswith(top if top.endswith("/") else top + "/")


_FOUND_BWRAP: dict[str | None, str] = {}  # PATH -> where bwrap was found on it


def _which_bwrap() -> str | None:
    """``shutil.which("bwrap")``, remembered once found (asked twice per isolated job: a PATH
    walk each time cost the loop about 0.1 ms); a miss is asked again, so installing bubblewrap
    later is noticed."""
    path = os.environ.get("PATH")
    found = _FOUND_BWRAP.get(path)
    if found is None:
        found = shutil.which("bwrap", path=path)
        if found is not None:
            _FOUND_BWRAP[path] = found
    return found


@functools.lru_cache(maxsize=8)
def _probe(executable: str) -> str | None:
    """None when bubblewrap can build a namespace here, else why not (checked once)."""
    try:
        done = subprocess.run(
            [executable, "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "true"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{executable} cannot run: {error}"
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"{executable} cannot create a sandbox here (exit {done.returncode}): {detail}"
    return None


class Boundary:
    """Builds the ``bwrap`` command line that runs one job inside its own filesystem view."""

    def __init__(self, *, executable: str | None = None, protected: Sequence[Path] = ()) -> None:
        self._explicit = executable
        self.protected = [_resolve(p) for p in protected]

    @property
    def executable(self) -> str | None:
        return self._explicit or os.environ.get(BWRAP_PATH_ENV) or _which_bwrap()

    def unavailable_reason(self) -> str | None:
        """None when jobs can be isolated; otherwise a message that says how to fix it."""
        executable = self.executable
        if not executable:
            return (
                "bubblewrap (bwrap) is not installed: install Debian's 'bubblewrap' package "
                f"(scripts/bootstrap.sh does), or set {BWRAP_PATH_ENV}"
            )
        return _probe(executable)

    def describe(self) -> str:
        reason = self.unavailable_reason()
        return f"bubblewrap at {self.executable}" if reason is None else f"none ({reason})"

    def check_path(self, field_name: str, raw: str) -> None:
        """A job may not work in a protected place: masking it would hide its own directory."""
        path = _resolve(Path(raw))
        for protected in self.protected:
            if _inside(path, protected):
                raise InvalidInputError(
                    field_name,
                    f"{raw} is inside {protected}, which the gateway hides from jobs "
                    "(its data, Jupyter's runtime and config dirs, credential files); "
                    "choose a directory outside it",
                )

    def wrap(self, argv: list[str], *, cwd: str, mounts: Mounts) -> list[str]:
        executable = self.executable
        reason = self.unavailable_reason()
        if executable is None or reason is not None:
            raise IsolationError(f"job isolation is unavailable: {reason}")
        for raw in [cwd, *mounts.writable]:
            self.check_path("working_dir" if raw == cwd else "add_dirs", raw)
        binds: list[tuple[str, str, str]] = [  # (option, source, destination)
            ("--tmpfs", "", "/tmp"),
            ("--tmpfs", "", "/var/tmp"),
        ]
        for path in SYSTEM_READ_ONLY:
            if os.path.isdir(path):
                binds.append(("--ro-bind", path, path))
        resolv = os.path.realpath("/etc/resolv.conf")
        if not resolv.startswith("/etc/") and os.path.exists(resolv):
            binds.append(("--ro-bind", os.path.dirname(resolv), os.path.dirname(resolv)))
        for raw in mounts.read_only:
            real = str(_resolve(Path(raw)))
            if os.path.exists(real):
                binds.append(("--ro-bind", real, real))
        for raw in [*mounts.writable, cwd]:
            real = str(_resolve(Path(raw)))
            binds.append(("--bind", real, real))
        args = [
            executable,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        for link in SYSTEM_LINKS:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        # Parents before children, so a deeper mount is never shadowed by a shallower one.
        for option, source, destination in sorted(binds, key=lambda b: _depth(b[2])):
            args += [option, destination] if option == "--tmpfs" else [option, source, destination]
        visible = [_resolve(Path(b[2])) for b in binds]
        for protected in self.protected:
            if any(_inside(protected, top) for top in visible) and os.path.lexists(protected):
                if os.path.isdir(protected):
                    args += ["--tmpfs", str(protected)]
                else:
                    args += ["--ro-bind", "/dev/null", str(protected)]
        args += ["--tmpfs", INSIDE_ROOT, "--dir", INSIDE_HOME]
        for inside, real in mounts.private.items():
            args += ["--bind", str(_resolve(Path(real))), inside]
        args += ["--chdir", str(_resolve(Path(cwd))), "--"]
        return args + argv


def _depth(path: str) -> int:
    return len(Path(path).parts)
