"""What a tool looks like from the outside: its name, description and JSON schema."""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loom.errors import ToolArgumentsInvalid

M = TypeVar("M", bound=BaseModel)

#: ``namespace:verb`` — e.g. ``fs:read_file``, ``system:shell``, ``github:create_issue``;
#: the dotted ``namespace.verb`` of earlier Loom code (``hello.echo``) is accepted as is.
NAME_RE = re.compile(
    r"^(?:[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.-]{1,64}|[A-Za-z0-9_-]{1,64}(?:\.[A-Za-z0-9_-]{1,64})+)$"
)


def openai_name(name: str) -> str:
    """OpenAI function names allow ``[A-Za-z0-9_-]`` only: ``fs:read_file`` →
    ``fs__read_file`` (reversed by the registry). The same rule the LLM client applies
    on the wire, so a name offered and a name called back always match."""
    from loom.llm import wire_tool_name

    return wire_tool_name(name)


class ToolSpec(BaseModel):
    """A registered tool."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    source: Literal["native", "python", "mcp", "remote"] = "python"
    #: For MCP tools: the server's name.
    server: str | None = None
    #: For remote tools (another process's export, over NATS): the hosts serving it.
    hosts: tuple[str, ...] = ()
    requires_approval: bool = False
    #: Running it twice has the effect of running it once (a read, a listing, an atomic
    #: write of the same content): a durable run interrupted during the call runs it
    #: again; any other tool then raises ``ToolInDoubt`` instead.
    idempotent: bool = False

    def to_openai(self) -> dict[str, Any]:
        """This tool in the OpenAI ``tools`` format (function calling)."""
        return {
            "type": "function",
            "function": {
                "name": openai_name(self.name),
                "description": self.description or self.name,
                "parameters": self.parameters,
            },
        }


def validate_arguments(tool: str, model: type[M], args: Any) -> M:
    """``args`` validated by ``model``, or :class:`ToolArgumentsInvalid` naming every
    problem (``errors``: ``loc``, ``msg``, ``type``) — the one way tools report bad
    arguments."""
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(map(str, e["loc"])) or "(root)", "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        raise ToolArgumentsInvalid(tool, f"invalid arguments: {summary}", errors) from None
