"""``@tool``: Python functions as tools, with a JSON schema from their type hints."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_core import to_jsonable_python

from loom.errors import LoomError, ToolError, ToolFailed
from loom.tools.spec import NAME_RE, ToolSpec, validate_arguments

if TYPE_CHECKING:
    from loom.tools.registry import ToolRegistry

F = TypeVar("F", bound=Callable[..., Any])

#: Tools defined with ``@tool`` anywhere in the process; every runtime registers them.
GLOBAL_TOOLS: list[PythonTool] = []


def _doc_parts(doc: str | None) -> tuple[str, dict[str, str]]:
    """Splits a Google-style docstring into its summary and ``Args:`` descriptions."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    summary = doc.split("\n\n", 1)[0].strip()
    args: dict[str, str] = {}
    m = re.search(r"^(Args|Arguments|Parameters):\s*\n(.*?)(?:\n\S|\Z)", doc, re.S | re.M)
    if m:
        current = None
        for line in m.group(2).splitlines():
            hit = re.match(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if hit and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = hit.group(1)
                args[current] = hit.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return summary, args


def _takes_ctx(param: inspect.Parameter, hint: Any) -> bool:
    name = getattr(hint, "__name__", "")
    return param.name == "ctx" or name in {"AgentContext", "RunContext"}


class PythonTool:
    """A Python function registered as a tool."""

    #: The registry enforces the timeout exactly (a coroutine is simply cancelled).
    timeout_grace = 0.0

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        *,
        idempotent: bool = False,
    ) -> None:
        self.fn = fn
        name = name or f"local:{fn.__name__}"
        if not NAME_RE.match(name):
            raise LoomError(
                f"invalid tool name {name!r}: use 'namespace:verb' "
                "(letters, digits, '_', '-', '.'), e.g. 'notes:add' (or 'notes.add')"
            )
        summary, arg_docs = _doc_parts(fn.__doc__)
        sig = inspect.signature(fn)
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception:  # unresolvable forward refs: fall back to raw annotations
            hints = {}
        fields: dict[str, Any] = {}
        self._ctx_param: str | None = None
        for i, (pname, param) in enumerate(sig.parameters.items()):
            hint = hints.get(pname, param.annotation)
            if i == 0 and _takes_ctx(param, hint):
                self._ctx_param = pname
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise LoomError(f"tool {name}: *args/**kwargs cannot be described by a schema")
            annotation = Any if hint is inspect.Parameter.empty else hint
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (annotation, Field(default, description=arg_docs.get(pname)))
        self.model: type[BaseModel] = create_model(
            f"{fn.__name__}_args",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.spec = ToolSpec(
            name=name,
            description=description or summary or name,
            parameters=schema,
            source="python",
            idempotent=idempotent,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def validate(self, args: dict[str, Any]) -> BaseModel:
        return validate_arguments(self.name, self.model, args)

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        """Validates ``args`` and runs the function (sync functions off the loop)."""
        validated = self.validate(args)
        kwargs = {k: getattr(validated, k) for k in self.model.model_fields}
        if self._ctx_param:
            kwargs[self._ctx_param] = ctx
        try:
            if self.is_async:
                result = await self.fn(**kwargs)
            else:
                result = await asyncio.to_thread(self.fn, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolFailed(self.name, f"{type(exc).__name__}: {exc}") from exc
        try:
            return to_jsonable_python(result)
        except Exception as exc:
            raise ToolFailed(self.name, f"result is not JSON-serialisable: {exc}") from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"PythonTool({self.name!r})"


def adopt(registry: ToolRegistry, item: str | Callable[..., Any]) -> str:
    """The registered name of ``item``, one of an agent's ``tools``: a name must be
    registered already; a function (or ``@tool``) is registered unless it already is.

    Raises:
        ToolNotFound: no tool has that name (with the closest names).
        LoomError: a different function is registered under the same name.
    """
    if isinstance(item, str):
        return registry.get(item).spec.name
    pt = item if isinstance(item, PythonTool) else PythonTool(item)
    if pt.name not in registry:
        registry.register(pt)
        return pt.name
    existing = registry.get(pt.name)
    if existing is not pt and getattr(existing, "fn", None) is not pt.fn:
        raise LoomError(f"tool {pt.name!r} is already registered (a different function)")
    return pt.name


@overload
def tool(fn: F, /) -> PythonTool: ...
@overload
def tool(
    name: str | None = None,
    /,
    *,
    description: str | None = None,
    register: bool = True,
    idempotent: bool = False,
) -> Callable[[F], PythonTool]: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    register: bool = True,
    idempotent: bool = False,
) -> Callable[[F], PythonTool]: ...


def tool(
    fn: Callable[..., Any] | str | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    register: bool = True,
    idempotent: bool = False,
) -> PythonTool | Callable[[Callable[..., Any]], PythonTool]:
    """Makes a function a tool every agent can call with ``ctx.tool(name, args)``.

    The JSON schema comes from the type hints (through pydantic) and the argument
    descriptions from the Google-style docstring; the summary line is the description.
    A first parameter named ``ctx`` (or typed ``AgentContext``) receives the caller's
    context and is not part of the schema. Sync functions run in a worker thread.

    The name may also come first: ``@tool("notes:add", description=...)``.

    Example:
        >>> @tool
        ... def add(a: int, b: int = 1) -> int:
        ...     '''Adds two numbers.'''
        ...     return a + b
        >>> add.name
        'local:add'

    Args:
        name: ``namespace:verb``; defaults to ``local:<function name>``.
        description: Overrides the docstring summary.
        register: Add it to the tools every runtime offers (default True).
        idempotent: Calling it twice has the effect of calling it once. A durable
            run interrupted while the tool ran calls it again on resume; otherwise the
            caller gets ``ToolInDoubt``. A tool with side effects can make itself
            idempotent with the call id of :func:`loom.tools.current_call` (the same on
            every attempt).
    """

    def wrap(f: Callable[..., Any]) -> PythonTool:
        t = PythonTool(f, name=name, description=description, idempotent=idempotent)
        if register:
            GLOBAL_TOOLS[:] = [g for g in GLOBAL_TOOLS if g.fn is not f]
            if any(g.name == t.name for g in GLOBAL_TOOLS):
                raise LoomError(f"tool {t.name!r} is already defined; names must be unique")
            GLOBAL_TOOLS.append(t)
        return t

    if isinstance(fn, str):
        if name is not None:
            raise TypeError("tool() got the name twice (positionally and as name=)")
        name, fn = fn, None
    return wrap(fn) if fn is not None else wrap
