"""Every tunable of the LLM client in one place (openai-python keeps them the same way)."""

from __future__ import annotations

#: Seconds a single read (or the whole non-streamed response) may stall before
#: :class:`~loom.llm.errors.LLMTimeoutError`. Per attempt, not per call.
DEFAULT_TIMEOUT = 60.0
#: Seconds to establish a TCP/TLS connection.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Retries after the first attempt (so 3 attempts in all), like openai-python.
DEFAULT_MAX_RETRIES = 2
#: Exponential backoff: 0.5 s, 1 s, 2 s, ... capped at 8 s, minus up to 25 % jitter.
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
#: A server-sent ``Retry-After`` is honoured up to this many seconds; longer values
#: fall back to our own backoff rather than parking an agent for minutes.
MAX_RETRY_AFTER = 60.0
#: Statuses worth another attempt: timeout, conflict (lock contention), rate limit, 5xx.
RETRY_STATUSES = frozenset({408, 409, 429})
#: A response body larger than this is refused (a runaway or hostile server).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: Connection pool size per provider.
MAX_CONNECTIONS = 256
MAX_KEEPALIVE_CONNECTIONS = 64
#: How much of an error body we keep on exceptions (text bodies).
MAX_ERROR_BODY_CHARS = 2000
#: How much of an error response we read at most (JSON bodies are kept whole up to this).
MAX_ERROR_BODY_BYTES = 256 * 1024
#: Attempts for ``call_json`` (first try + re-asks with the validation error).
DEFAULT_JSON_ATTEMPTS = 3
#: Seconds the local llama.cpp server may take to answer ``/v1/models``.
LOCAL_SERVER_STARTUP_TIMEOUT = 120.0
