"""Every module imports on its own, in a fresh interpreter (no hidden import cycles), and the
core never imports Tornado, Jupyter Server, IPython or ipywidgets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmgw_jupyter"
MODULES = sorted(
    ".".join(("llmgw_jupyter", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__"
    )
    for path in PACKAGE.rglob("*.py")
    if "labextension" not in path.parts
)
CORE = ("runtime", "store", "providers", "policy", "tools", "gateway", "render", "errors")
FRAMEWORKS = ("tornado", "jupyter_server", "IPython", "ipywidgets")


def test_every_module_imports_on_its_own() -> None:
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('llmgw_jupyter')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {error!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *MODULES], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", done.stdout


@pytest.mark.parametrize("layer", CORE)
def test_the_core_imports_no_framework(layer: str) -> None:
    modules = [m for m in MODULES if m.split(".")[1:2] == [layer]]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{layer} pulls in {done.stdout.strip()}"
