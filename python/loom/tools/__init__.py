"""Tools: native (Rust, sandboxed), Python (``@tool``) and MCP, in one registry.

Agents call them with ``await ctx.tool("fs:read_file", {"path": "notes.md"})``.
"""

from loom.tools.python import PythonTool, tool
from loom.tools.registry import (
    ApprovalRequest,
    Approver,
    Tool,
    ToolCall,
    ToolRegistry,
    current_call,
    is_pattern,
    matches,
)
from loom.tools.render import describe_call
from loom.tools.spec import ToolSpec, openai_name

__all__ = [
    "ApprovalRequest",
    "Approver",
    "PythonTool",
    "Tool",
    "ToolCall",
    "ToolRegistry",
    "ToolSpec",
    "current_call",
    "describe_call",
    "is_pattern",
    "matches",
    "openai_name",
    "tool",
]
