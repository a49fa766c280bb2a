"""Generate the lab extension's TypeScript wire types from the Python contract.

``llmgw_jupyter.contract.WIRE_MODELS`` -> one JSON Schema -> ``json-schema-to-typescript`` (a
devDependency of the lab extension) -> ``labextension/src/contract.ts``, formatted by the
extension's own prettier. Run by ``jlpm build:lib``; ``scripts/test.sh`` regenerates it and fails
when the committed file differs, so the TypeScript types cannot drift from the server's answers.

Each model becomes ``I<Name>`` (the extension's lint wants interface names to start with I);
every field is required, as the server always sends every field (null when empty; checked in
tests/test_contract.py), except those marked ``contract.MAY_BE_ABSENT``.

    python scripts/gen_contract.py            # write labextension/src/contract.ts
    python scripts/gen_contract.py --schema   # print the JSON Schema only
    python scripts/gen_contract.py --keep-if-unavailable   # keep the committed file when
        # llmgw_jupyter cannot be imported (a wheel build's isolated environment)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the contract of this tree, whichever llmgw_jupyter is installed
LAB = ROOT / "labextension"
OUTPUT = LAB / "src" / "contract.ts"
BANNER = (
    "/**\n"
    " * The llmgw wire contract: generated from llmgw_jupyter/contract.py by\n"
    " * scripts/gen_contract.py (json-schema-to-typescript). Do not edit by hand.\n"
    " */"
)
# json-schema-to-typescript through its Node API: schema on stdin, TypeScript on stdout.
COMPILE_JS = """
const { compile } = require('json-schema-to-typescript');
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', chunk => (input += chunk));
process.stdin.on('end', async () => {
  const options = JSON.parse(process.argv[1]);
  process.stdout.write(await compile(JSON.parse(input), 'IContract', options));
});
"""


def contract_schema() -> dict[str, Any]:
    """One schema whose ``$defs`` are every wire model, titled ``I<Name>``."""
    from pydantic.json_schema import models_json_schema

    from llmgw_jupyter.contract import MAY_BE_ABSENT, WIRE_MODELS

    _, schema = models_json_schema(
        [(model, "serialization") for model in WIRE_MODELS], ref_template="#/$defs/{model}"
    )
    definitions: dict[str, Any] = schema["$defs"]
    for name, definition in definitions.items():
        if definition.get("type") == "object":
            definition["title"] = f"I{name}"
            for field in definition.get("properties", {}).values():
                field.pop("title", None)  # else every field becomes a type alias of its own
            properties = definition.get("properties", {})
            definition["required"] = [
                key for key, field in properties.items() if not field.pop(MAY_BE_ABSENT, False)
            ]
            definition["additionalProperties"] = definition.get("additionalProperties", False)
    return {
        "title": "IContract",
        "description": "Every wire model (the root only lists them).",
        "type": "object",
        "properties": {name: {"$ref": f"#/$defs/{name}"} for name in sorted(definitions)},
        "additionalProperties": False,
        "$defs": definitions,
    }


def constants() -> str:
    """Values TypeScript cannot take from a type: the job statuses, in the server's order."""
    from llmgw_jupyter.contract import StatusName

    statuses = ", ".join(f"'{status}'" for status in StatusName.__args__)  # type: ignore[attr-defined]
    return (
        "\n/** Every job status, in the server's order. */\n"
        f"export const JOB_STATUSES: readonly IJobView['status'][] = [{statuses}];\n"
    )


def typescript(schema: dict[str, Any]) -> str:
    options = {
        "bannerComment": BANNER,
        "format": False,
        "additionalProperties": False,
        "unreachableDefinitions": True,
        "enableConstEnums": False,
    }
    compiled = subprocess.run(
        ["node", "-e", COMPILE_JS, json.dumps(options)],
        input=json.dumps(schema),
        capture_output=True,
        text=True,
        cwd=LAB,
        check=True,
    )
    return compiled.stdout


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    prettier = LAB / "node_modules" / ".bin" / "prettier"
    subprocess.run(
        [str(prettier), "--write", "--log-level", "warn", str(path)], cwd=LAB, check=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schema", action="store_true", help="print the JSON Schema and stop")
    parser.add_argument("--keep-if-unavailable", action="store_true")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    options = parser.parse_args(argv)
    try:
        schema = contract_schema()
    except ImportError as error:
        if options.keep_if_unavailable and options.output.exists():
            print(f"gen_contract: kept {options.output.name} ({error})", file=sys.stderr)
            return 0
        raise
    if options.schema:
        print(json.dumps(schema, indent=2))
        return 0
    write(options.output, typescript(schema) + constants())
    return 0


if __name__ == "__main__":
    sys.exit(main())
