"""The tool registry: each tool defined once (name, description, models, annotations, handler).

``ToolRegistry.for_providers`` builds it from the providers a runtime runs: three tools per
provider from its ``ToolSpec`` (``<name>_request``, ``<name>_request_async``,
``<name>_fork_session``) and the job and session tools every provider shares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Protocol

from pydantic import BaseModel

from llmgw_jupyter import contract
from llmgw_jupyter.providers.base import ToolSpec
from llmgw_jupyter.tools import handlers, schemas
from llmgw_jupyter.tools.context import ToolContext

Handler = Callable[[ToolContext, Any], Awaitable["BaseModel | contract.Encoded"]]


@dataclass(frozen=True)
class Annotations:
    """MCP tool annotations: Codex as an MCP client runs only readOnlyHint tools unprompted."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool

    def to_dict(self) -> dict[str, bool]:
        return {
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        }


READ_ONLY = Annotations(read_only=True, destructive=False, idempotent=True, open_world=False)
RUNS_AGENT = Annotations(read_only=False, destructive=True, idempotent=False, open_world=True)


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    title: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    annotations: Annotations
    handler: Handler
    starts_job: bool = False  # its work goes on as a job: under approval it answers at once
    waits: bool = False  # it may wait for a job (no quick answer path)
    runs_agent: bool = False  # it runs a CLI (a job): budgets apply to it

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema()


_POLL = "Answers at once with the job id; follow it with llm_job_watch and llm_job_result."
_RESUME = " Pass session_id to resume an earlier session."


class ProviderLike(Protocol):
    """A provider, or its class: all the tool layer reads of one."""

    name: str
    tool_spec: ToolSpec


def provider_tools(name: str, spec: ToolSpec) -> tuple[ToolDefinition, ...]:
    """``<name>_request``, ``<name>_request_async`` and, if it can fork, ``<name>_fork_session``."""
    inputs = schemas.provider_inputs(name, spec)
    run = handlers.ProviderHandlers(name, spec.label)
    tools = [
        ToolDefinition(
            f"{name}_request",
            f"Run a {spec.label} request and wait",
            f"Run {spec.request_noun} ({spec.command}) and wait up to wait_seconds for the "
            "answer. If it takes longer the job keeps running and the answer gives its id and "
            "how to poll." + _RESUME,
            inputs.request,
            contract.RequestOutput,
            RUNS_AGENT,
            run.request,
            waits=True,
            runs_agent=True,
        ),
        ToolDefinition(
            f"{name}_request_async",
            f"Start a {spec.label} request in the background",
            f"Start {spec.request_noun} as a durable background job. " + _POLL + _RESUME,
            inputs.request_async,
            contract.SubmitOutput,
            RUNS_AGENT,
            run.request_async,
            starts_job=True,
            runs_agent=True,
        ),
    ]
    if spec.can_fork:
        tools.append(
            ToolDefinition(
                f"{name}_fork_session",
                f"Fork a {spec.label} session",
                f"Fork an existing {spec.label} session (session_id, or last: true for the most "
                "recent one) and run a prompt against the fork; the original session is left "
                "unchanged. " + _POLL,
                inputs.fork,
                contract.SubmitOutput,
                RUNS_AGENT,
                run.fork_session,
                starts_job=True,
                runs_agent=True,
            )
        )
    return tuple(tools)


def job_tools(labels: Iterable[str]) -> tuple[ToolDefinition, ...]:
    """The tools over jobs and sessions of every provider."""
    names = list(labels)
    sessions = (
        f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)
    ) or "Agent"
    return (
        ToolDefinition(
            "llm_job_status",
            "Job status and events",
            "State, timestamps and progress events after a sequence number of one job. Job views "
            "carry a prompt preview and the small arguments; include_args: true adds the rest.",
            schemas.JobStatusInput,
            contract.JobEventsOutput,
            READ_ONLY,
            handlers.llm_job_status,
        ),
        ToolDefinition(
            "llm_job_watch",
            "Wait for job progress",
            "Wait up to 30 s for new events of a job or its end; sends progress notifications "
            "when the request carries a progress token.",
            schemas.JobWatchInput,
            contract.JobEventsOutput,
            READ_ONLY,
            handlers.llm_job_watch,
            waits=True,
        ),
        ToolDefinition(
            "llm_job_result",
            "Job result",
            "Final message, session id, usage and exit code of a job, with its raw stdout or "
            "stderr in pages (offset, limit).",
            schemas.JobResultInput,
            contract.JobResultOutput,
            READ_ONLY,
            handlers.llm_job_result,
        ),
        ToolDefinition(
            "llm_job_cancel",
            "Cancel a job",
            "Cancel a queued, waiting or running job (its whole process group is stopped).",
            schemas.JobCancelInput,
            contract.JobCancelOutput,
            Annotations(read_only=False, destructive=True, idempotent=True, open_world=False),
            handlers.llm_job_cancel,
        ),
        ToolDefinition(
            "llm_job_list",
            "List jobs",
            "Jobs newest first, filtered by status and provider, in pages.",
            schemas.JobListInput,
            contract.JobListOutput,
            READ_ONLY,
            handlers.llm_job_list,
        ),
        ToolDefinition(
            "llm_session_list",
            "List sessions",
            f"{sessions} sessions with their parent and fork children.",
            schemas.SessionListInput,
            contract.SessionListOutput,
            READ_ONLY,
            handlers.llm_session_list,
        ),
    )


class ToolRegistry:
    """The tools of one gateway: its providers' tools first, then the job tools, by name."""

    def __init__(
        self, tools: Iterable[ToolDefinition], light_arg_keys: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.tools: tuple[ToolDefinition, ...] = tuple(tools)
        self._by_name = {tool.name: tool for tool in self.tools}
        if len(self._by_name) != len(self.tools):
            raise ValueError("two tools share a name")
        self.names: tuple[str, ...] = tuple(self._by_name)
        self.job_starting: frozenset[str] = frozenset(t.name for t in self.tools if t.starts_job)
        self.light_arg_keys: Mapping[str, tuple[str, ...]] = dict(light_arg_keys)

    @classmethod
    def for_providers(
        cls, providers: Mapping[str, ProviderLike] | Iterable[ProviderLike]
    ) -> ToolRegistry:
        members = list(providers.values() if isinstance(providers, Mapping) else providers)
        for member in members:
            if not isinstance(getattr(member, "tool_spec", None), ToolSpec):
                raise TypeError(
                    f"provider {getattr(member, 'name', member)!r} declares no tool_spec "
                    "(llmgw_jupyter.providers.base.ToolSpec): the gateway cannot offer its tools"
                )
        tools = [tool for p in members for tool in provider_tools(p.name, p.tool_spec)]
        tools += job_tools(p.tool_spec.label for p in members)
        return cls(tools, {p.name: p.tool_spec.light_arg_keys for p in members})

    def get(self, name: str) -> ToolDefinition | None:
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> ToolDefinition:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[ToolDefinition]:
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def is_quick(self, name: str) -> bool:
        """Known and never waits for a job: answered without the SDK's event stream."""
        tool = self._by_name.get(name)
        return tool is not None and not tool.waits


@lru_cache(maxsize=1)
def builtin_registry() -> ToolRegistry:
    """The tools of the installed providers (e.g. for ``llmgw policy check``)."""
    from llmgw_jupyter.providers.registry import installed_providers, load_provider_class

    return ToolRegistry.for_providers(
        load_provider_class(name, ref) for name, ref in installed_providers().items()
    )


def __getattr__(name: str) -> Any:
    """``REGISTRY``, ``TOOLS``, ``TOOL_NAMES``, ``JOB_STARTING_TOOLS``: the installed providers'
    tools, for callers that know no runtime; a gateway uses its own ``ToolRegistry``."""
    registry = builtin_registry()
    views: dict[str, Callable[[], Any]] = {
        "REGISTRY": lambda: dict(registry._by_name),
        "TOOLS": lambda: registry.tools,
        "TOOL_NAMES": lambda: registry.names,
        "JOB_STARTING_TOOLS": lambda: registry.job_starting,
    }
    if name in views:
        return views[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
