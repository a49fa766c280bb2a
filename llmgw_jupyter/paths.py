"""Where the gateway keeps its store and job output."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LLMGW_DATA_DIR"


def default_data_dir() -> Path:
    """``$LLMGW_DATA_DIR``, else ``llmgw/`` under the Jupyter data dir."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from jupyter_core.paths import jupyter_data_dir  # light import; no server machinery

    return Path(jupyter_data_dir()) / "llmgw"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """An explicit argument wins over the environment and the default."""
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 whatever the umask: job output, prompts
    and the store are for the owner's eyes only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path
