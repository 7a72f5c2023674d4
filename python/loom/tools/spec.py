"""What a tool looks like from the outside: its name, description and JSON schema."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: ``namespace:verb`` — e.g. ``fs:read_file``, ``system:shell``, ``github:create_issue``.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.-]{1,64}$")


def openai_name(name: str) -> str:
    """OpenAI function names allow ``[A-Za-z0-9_-]`` only: ``fs:read_file`` →
    ``fs__read_file`` (reversed by the registry). The same rule the LLM client applies
    on the wire, so a name offered and a name called back always match."""
    from loom.llm._request import wire_tool_name

    return wire_tool_name(name)


class ToolSpec(BaseModel):
    """A registered tool."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    source: Literal["native", "python", "mcp"] = "python"
    #: For MCP tools: the server's name.
    server: str | None = None
    requires_approval: bool = False

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
