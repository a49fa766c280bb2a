"""The kernel side imports only what a notebook needs: ``%load_ext llmgw_jupyter`` and the job
handles and widgets must not pull in the runtime, the store, ``sqlite3`` or ``psutil`` (the
embedded gateway imports those itself, when a cell first needs it)."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_SIDE = ("llmgw_jupyter.runtime", "llmgw_jupyter.store", "sqlite3", "psutil")

# IPython's history is a sqlite3 database: the shell runs without it, so that what the
# extension imports is all that is measured.
LOAD_EXTENSION = """
from traitlets.config import Config
from IPython.core.interactiveshell import InteractiveShell
config = Config()
config.HistoryManager.enabled = False
shell = InteractiveShell.instance(config=config)
before = loaded()
shell.run_line_magic("load_ext", "llmgw_jupyter")
assert "llm_job" in shell.magics_manager.magics["line"], "the magics were not registered"
"""

IMPORT_VIEWS = """
before = loaded()
import llmgw_jupyter.kernel
import llmgw_jupyter.kernel.handle
import llmgw_jupyter.kernel.widget
"""


def server_side_modules_after(code: str) -> tuple[list[str], list[str]]:
    """Run ``code`` in a fresh interpreter: the server-side modules loaded before and after."""
    script = (
        "import json, sys\n"
        f"SERVER_SIDE = {SERVER_SIDE!r}\n"
        "def loaded():\n"
        "    return sorted(m for m in sys.modules\n"
        "                  if any(m == s or m.startswith(s + '.') for s in SERVER_SIDE))\n"
        f"{code}\n"
        "print(json.dumps([before, loaded()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    return before, after


def test_job_handles_and_widgets_import_no_server_side_module() -> None:
    before, after = server_side_modules_after(IMPORT_VIEWS)
    assert before == []
    assert after == []


def test_load_ext_imports_no_server_side_module() -> None:
    before, after = server_side_modules_after(LOAD_EXTENSION)
    assert before == []  # the measurement itself is clean
    assert after == []
