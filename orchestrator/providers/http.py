"""The transport under every API client: one request with retries, rate limits, SSE and timing.

Data flow of one call:

    body -> send(): [state.acquire -> POST -> parse SSE / JSON -> state.observe] x attempts -> Completion

* Retries: 429, 5xx, timeouts, connection errors, streams cut mid-way and malformed chunks are retried with
  bounded exponential backoff plus jitter; a `Retry-After` header (seconds or an HTTP date) sets the wait.
  Other 4xx fail at once. Each attempt is recorded (status, error, duration, the wait after it).
* A 400/422/500 saying a feature of the request is unsupported (`ladder.rejected_feature`) is not retried:
  `UnsupportedFeatureError` goes at once to the chat model, which steps down a rung (see `ladder.py`).
* Timing comes from the stream of the attempt that succeeded: time to the first generated token (TTFT),
  total time, generation time. A call that was not streamed has TTFT `None`.
* An attempt that broke after tokens arrived is still billed: its usage is estimated from the request and the
  text received, and marked `estimated`.
* A `deadline` (`time.monotonic()`) bounds the whole call, retries and waits included: at the deadline
  the request under way is cancelled (its connection closed) and the call returns what it had, with
  `finish_reason` "deadline" and the usage it probably cost (the prompt, and the text received so far),
  marked `estimated`.
* Rate limits: each (base URL, model) has a `ModelState` shared by the process. It caps concurrent requests
  (halved on a 429, regrown one by one on success, never above what the rate-limit headers say remains) and
  blocks new requests until a `Retry-After` or an exhausted window's reset has passed. With a fleet limiter
  installed (`fleet_limits.use_fleet_limits`), the cap and the blocks also hold across processes and machines.
* The API key is read from its environment variable at request time, sent only in a header, and scrubbed
  from every error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from orchestrator.cost.billing import Attempt  # billing charges failed attempts too
from orchestrator.cost.pricing import Usage
from orchestrator.errors import ConfigError, ProviderError, UnsupportedFeatureError
from orchestrator.providers import wire
from orchestrator.providers.ladder import rejected_feature
from orchestrator.providers.sse import Events
from orchestrator.sync import on_loop_end

__all__ = [
    "Attempt",
    "Completion",
    "Draft",
    "Endpoint",
    "FleetLimiter",
    "ModelState",
    "Protocol",
    "ProviderError",
    "StreamState",
    "UnsupportedFeatureError",
    "model_state",
    "send",
    "set_fleet_limiter",
]


@dataclass
class Draft:
    """What a protocol parsed out of one response (streamed or not)."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {id, name, arguments: str}
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None
    margin: float | None = None  # with logprobs asked for: the least sure token's lead over its runner-up


@dataclass
class Completion:
    """The result of one call: the successful attempt's output and timing, and every attempt."""

    draft: Draft
    usage: Usage
    ttft_ms: float | None
    duration_ms: float
    generation_ms: float | None
    attempts: list[Attempt]
    rate_limits: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # more response metadata (e.g. "downgraded")

    @property
    def retry_wait_ms(self) -> float:
        """Time spent waiting between attempts."""
        return sum(a.wait_ms for a in self.attempts)


class StreamState(ABC):
    """Accumulates one streamed response from its SSE events."""

    def __init__(self) -> None:
        self.draft = Draft()

    @abstractmethod
    def feed(self, event: str | None, data: dict[str, Any]) -> str | None:
        """Take one event; return the text delta it carried ('' for non-text content), None for no content."""

    def error(self, event: str | None, data: dict[str, Any]) -> str | None:
        """An error the server reported inside the stream, or None."""
        return None


class Protocol(ABC):
    """One wire protocol (OpenAI chat completions, Anthropic Messages)."""

    path: str

    @abstractmethod
    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """Headers carrying the key (none when there is no key)."""

    @abstractmethod
    def parse(self, data: dict[str, Any]) -> Draft:
        """A non-streamed response body."""

    @abstractmethod
    def stream_state(self) -> StreamState:
        """A fresh accumulator for one streamed attempt."""

    def error_message(self, body: str) -> str:
        """The provider's own error message from an error body, shortened."""
        try:
            data = json.loads(body)
        except ValueError:
            return body[:300]
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        return body[:300]


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: base URL, key variable, headers, timeouts and retry policy."""

    base_url: str
    api_key_env: str | None = None
    key_required: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0  # the longest silence allowed between two chunks
    max_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0  # a longer Retry-After fails the call (so a fallback can take over)
    max_concurrency: int = 16

    def api_key(self) -> str | None:
        """The key, read now from its environment variable; a clear error when it is required and unset."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env) or None
        if key is None and self.key_required:
            raise ConfigError(
                f"environment variable {self.api_key_env} is not set: export your API key in it "
                f"(requests go to {self.base_url})"
            )
        return key


# --- rate limits and cooldown, shared by the process -------------------------------------------------
class FleetLimiter(ABC):
    """What holds a model's cap and its `Retry-After` blocks across processes (`fleet_limits.py`).

    Installed process-wide with `set_fleet_limiter`; with none installed, `ModelState` is process-local.
    """

    @abstractmethod
    async def acquire(self, state: ModelState) -> None:
        """Take one of the fleet's `state.max_concurrency` slots of `state.key`, waiting as long as needed."""

    @abstractmethod
    async def release(self, state: ModelState) -> None:
        """Give back one slot `acquire` took for `state.key`."""

    @abstractmethod
    def block(self, state: ModelState, seconds: float) -> None:
        """No new request of the fleet to `state.key` before `seconds` from now (returns at once)."""


_fleet: FleetLimiter | None = None


def set_fleet_limiter(limiter: FleetLimiter | None) -> FleetLimiter | None:
    """Install the limiter every `ModelState` also goes through (None: process-local); returns the old one."""
    global _fleet
    old, _fleet = _fleet, limiter
    return old


class ModelState:
    """Concurrency cap, rate-limit window and failure streak of one (base URL, model)."""

    def __init__(self, max_concurrency: int, key: tuple[str, str] = ("", "")) -> None:
        self.key = key  # (base URL, model): what a fleet limiter counts by
        self.max_concurrency = max(1, max_concurrency)
        self.limit = self.max_concurrency
        self.in_flight = 0
        self.blocked_until = 0.0  # time.monotonic()
        self.failures = 0  # consecutive failed calls (not attempts)
        self.cooldown_until = 0.0
        self.last_headers: dict[str, str] = {}
        self.unsupported: dict[str, str] = {}  # feature -> the error that refused it (see ladder.py)
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:
            self._cond, self._loop = asyncio.Condition(), loop
        return self._cond

    async def acquire(self) -> float:
        """Wait for a free slot and for any block to pass; returns the time waited in ms."""
        cond = self._condition()
        t0 = time.perf_counter()
        async with cond:
            while True:
                wait = self.blocked_until - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(cond.wait(), timeout=wait)
                    continue
                if self.in_flight < self.limit:
                    self.in_flight += 1
                    break
                await cond.wait()
        if _fleet is not None:  # then a slot of the fleet's cap (holding this process's slot meanwhile)
            try:
                await _fleet.acquire(self)
            except BaseException:
                await self._release_local()
                raise
        return (time.perf_counter() - t0) * 1000

    async def release(self) -> None:
        if _fleet is not None:
            try:
                await _fleet.release(self)
            finally:
                await self._release_local()
            return
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify_all()

    async def _release_local(self) -> None:
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify_all()

    def block(self, seconds: float) -> None:
        """No new request before `seconds` from now."""
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)
        if _fleet is not None:
            _fleet.block(self, seconds)

    def observe(self, status: int, headers: httpx.Headers) -> None:
        """Adapt to a response: AIMD on the cap, and the rate-limit headers' remaining / reset."""
        limits = rate_limit_headers(headers)
        if limits:
            self.last_headers = limits
        if status == 429:
            self.limit = max(1, self.limit // 2)
        elif status < 400 and self.limit < self.max_concurrency:
            self.limit += 1
        remaining, reset_s = window(limits)
        if remaining is not None:
            self.limit = max(1, min(self.limit, remaining)) if remaining > 0 else self.limit
            if remaining == 0 and reset_s:
                self.block(reset_s)

    def cooling(self) -> bool:
        """In cooldown after repeated failures."""
        return time.monotonic() < self.cooldown_until

    def record(self, ok: bool, *, cooldown_after: int, cooldown_s: float) -> None:
        """Count a call's outcome; `cooldown_after` failures in a row start a cooldown."""
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= cooldown_after:
            self.cooldown_until = time.monotonic() + max(cooldown_s, self.blocked_until - time.monotonic())


_states: dict[tuple[str, str], ModelState] = {}
_states_lock = threading.Lock()


def model_state(base_url: str, model: str, max_concurrency: int = 16) -> ModelState:
    """The process-wide state of one (base URL, model)."""
    with _states_lock:
        state = _states.get((base_url, model))
        if state is None:
            state = _states[(base_url, model)] = ModelState(max_concurrency, (base_url, model))
        return state


def reset_model_states() -> None:
    """Forget all rate-limit, cooldown and refused-feature state (tests)."""
    with _states_lock:
        _states.clear()


_RL_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def rate_limit_headers(headers: httpx.Headers) -> dict[str, str]:
    """The rate-limit headers both providers send, plus retry-after."""
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower().startswith(_RL_PREFIXES) or k.lower() == "retry-after"
    }


def window(limits: dict[str, str]) -> tuple[int | None, float | None]:
    """The smallest remaining count among the request/token windows and the reset time of that window."""
    best: tuple[int, float | None] | None = None
    for key, value in limits.items():
        if not key.endswith("-remaining") and "-remaining-" not in key:
            continue
        try:
            remaining = int(float(value))
        except ValueError:
            continue
        reset_key = key.replace("remaining", "reset")
        reset = parse_reset(limits.get(reset_key, ""))
        if best is None or remaining < best[0]:
            best = (remaining, reset)
    return (best[0], best[1]) if best else (None, None)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str) -> float | None:
    """Seconds until a window resets: OpenAI's '6m0s' / '20ms' / '1.5s', or Anthropic's RFC 3339 time."""
    value = value.strip()
    if not value:
        return None
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return max(float(value), 0.0)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds (an integer, a decimal, or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def backoff(attempt: int, endpoint: Endpoint) -> float:
    """Exponential backoff with full jitter, bounded by `backoff_max_s`."""
    cap = min(endpoint.backoff_max_s, endpoint.backoff_base_s * (2**attempt))
    return random.uniform(cap / 2, cap)


_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*.]{4,}|sk-ant-[A-Za-z0-9_\-*.]{4,})")


def redact(text: str, key: str | None) -> str:
    """Remove the key (and anything key-shaped a server echoed back) from a message."""
    if key:
        text = text.replace(key, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


# --- clients, one per event loop ------------------------------------------------------------------------
_clients: dict[tuple[int, float, float], tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}


def _client(endpoint: Endpoint) -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    key = (id(loop), endpoint.connect_timeout_s, endpoint.read_timeout_s)
    found = _clients.get(key)
    if found is not None and found[0] is loop and not found[1].is_closed:
        return found[1]
    for k, (old_loop, _) in list(_clients.items()):
        if old_loop.is_closed():
            del _clients[k]
    timeout = httpx.Timeout(endpoint.read_timeout_s, connect=endpoint.connect_timeout_s)
    # No connection cap in the pool: each (base URL, model)'s `ModelState` caps its requests (the slot's
    # `max_concurrency`, up to 1024). A lower pool cap would be a hidden second limit, and requests queued in
    # httpcore's pool cost O(queued x connections) on the event loop each time one enters or leaves it: 1,000
    # concurrent runs behind a cap of 256 stalled the loop for over a minute (bench/load.py).
    client = httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
    )
    _clients[key] = (loop, client)
    return client


# Streamed calls go through `wire` (HTTP/1.1 on an asyncio.Protocol) where it can send them (`wire.usable`:
# no proxy configured), else through httpx. False sends them all through httpx (bench/stream_cpu.py compares).
FAST_STREAMS = True
_pools: dict[int, tuple[asyncio.AbstractEventLoop, wire.Pool]] = {}


def _pool() -> wire.Pool:
    loop = asyncio.get_running_loop()
    found = _pools.get(id(loop))
    if found is not None and found[0] is loop:
        return found[1]
    for k, (old_loop, _) in list(_pools.items()):
        if old_loop.is_closed():
            del _pools[k]
    pool = wire.Pool()
    _pools[id(loop)] = (loop, pool)
    return pool


async def aclose_clients() -> None:
    """Close this event loop's HTTP clients (call before the loop ends to avoid unclosed-socket warnings)."""
    loop = asyncio.get_running_loop()
    for k, (owner, client) in list(_clients.items()):
        if owner is loop:
            del _clients[k]
            await client.aclose()
    found = _pools.pop(id(loop), None)
    if found is not None and found[0] is loop:
        await found[1].aclose()


on_loop_end(aclose_clients)  # the sync bridge closes this loop's clients before the loop ends


# --- one call ---------------------------------------------------------------------------------------
class _Retryable(Exception):
    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.headers = headers


class _Fatal(Exception):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class _Unsupported(_Fatal):
    def __init__(self, message: str, status: int, feature: str) -> None:
        super().__init__(message, status)
        self.feature = feature


TextSink = Callable[[str], None]


@dataclass
class _Live:
    """The attempt under way, for what a call that is stopped at its deadline returns."""

    attempts: list[Attempt] = field(default_factory=list)
    running: bool = False  # a request is out (not waiting for a slot or a retry)
    t0: float = 0.0
    acc: StreamState | None = None
    first: float | None = None
    done: Completion | None = None  # the reply, when the deadline came as the call was ending


async def send(
    protocol: Protocol,
    endpoint: Endpoint,
    model: str,
    body: dict[str, Any],
    *,
    stream: bool,
    estimate_input: int,
    on_text: TextSink | None = None,
    on_restart: Callable[[str], None] | None = None,
    label: str | None = None,
    deadline: float | None = None,
) -> Completion:
    """POST `body` with retries; parse the stream (or JSON) into a Completion. At `deadline`
    (`time.monotonic()`) the call stops: see the module docstring."""
    live = _Live()
    args = (protocol, endpoint, model, body, stream, estimate_input, on_text, on_restart, label, live)
    if deadline is None:
        return await _send(*args)
    left = deadline - time.monotonic()
    if left > 0:
        scope = asyncio.timeout_at(asyncio.get_running_loop().time() + left)  # the loop's clock may differ
        try:
            async with scope:
                return await _send(*args)
        except TimeoutError:
            if not scope.expired():
                raise
    if live.done is not None:
        return live.done
    state = model_state(endpoint.base_url, model, endpoint.max_concurrency)
    return _stopped(live, estimate_input, state.last_headers)


def _stopped(live: _Live, estimate_input: int, rate_limits: dict[str, str]) -> Completion:
    """What a call stopped at its deadline returns: the text received, and the prompt and that text billed."""
    end = time.perf_counter()
    draft = live.acc.draft if live.running and live.acc is not None else Draft()
    draft.finish_reason = "deadline"
    usage = Usage(estimated=True)
    if live.running:  # the request was out: its prompt was read, and perhaps some tokens generated
        got = draft.usage or Usage()
        chars = len(draft.text) + sum(
            len(c.get("name", "")) + len(c.get("arguments", "")) for c in draft.tool_calls
        )
        usage = Usage(
            input_tokens=got.input_tokens or estimate_input,
            output_tokens=max(got.output_tokens, (chars + 3) // 4),
            cache_read_tokens=got.cache_read_tokens,
            cache_write_tokens=got.cache_write_tokens,
            cache_write_1h_tokens=got.cache_write_1h_tokens,
            estimated=True,
        )
        attempt = live.attempts[-1]
        attempt.error, attempt.duration_ms = "stopped at the deadline", (end - live.t0) * 1000
    first = live.first if live.running else None
    return Completion(
        draft=draft,
        usage=usage,
        ttft_ms=(first - live.t0) * 1000 if first is not None else None,
        duration_ms=(end - live.t0) * 1000 if live.running else 0.0,
        generation_ms=(end - first) * 1000 if first is not None else None,
        attempts=live.attempts,
        rate_limits=rate_limits,
    )


async def _send(
    protocol: Protocol,
    endpoint: Endpoint,
    model: str,
    body: dict[str, Any],
    stream: bool,
    estimate_input: int,
    on_text: TextSink | None,
    on_restart: Callable[[str], None] | None,
    label: str | None,
    live: _Live,
) -> Completion:
    key = endpoint.api_key()
    headers = {"content-type": "application/json", **dict(endpoint.headers), **protocol.auth_headers(key)}
    if stream:
        headers["accept"] = "text/event-stream"
    url = endpoint.base_url.rstrip("/") + protocol.path
    state = model_state(endpoint.base_url, model, endpoint.max_concurrency)
    payload = json.dumps(body, separators=(",", ":")).encode()
    client = _client(endpoint)
    name = label or model
    attempts = live.attempts
    last_status: int | None = None
    for n in range(endpoint.max_retries + 1):
        await state.acquire()
        t0 = time.perf_counter()
        attempt = Attempt(model=name, status=None, error=None, duration_ms=0.0)
        attempts.append(attempt)
        live.running, live.t0, live.acc, live.first = True, t0, None, None
        try:
            if stream:
                draft, first, status, resp_headers = await _stream_once(
                    client,
                    endpoint,
                    url,
                    headers,
                    payload,
                    protocol,
                    attempt,
                    t0,
                    on_text,
                    estimate_input,
                    live,
                )
            else:
                draft, status, resp_headers = await _post_once(client, url, headers, payload, protocol)
                first = None
            end = time.perf_counter()
            attempt.status, attempt.duration_ms = status, (end - t0) * 1000
            state.observe(status, resp_headers)
            usage = draft.usage or _estimate(estimate_input, draft, estimated=True)
            live.done = Completion(
                draft=draft,
                usage=usage,
                ttft_ms=(first - t0) * 1000 if first is not None else None,
                duration_ms=(end - t0) * 1000,
                generation_ms=(end - first) * 1000 if first is not None else None,
                attempts=attempts,
                rate_limits=state.last_headers,
            )
            return live.done
        except _Fatal as exc:
            attempt.status, attempt.error = exc.status, redact(str(exc), key)
            attempt.duration_ms = (time.perf_counter() - t0) * 1000
            if isinstance(exc, _Unsupported):
                raise UnsupportedFeatureError(
                    f"{name}: {attempt.error}", attempts, status=exc.status, feature=exc.feature
                ) from None
            raise ProviderError(f"{name}: {attempt.error}", attempts, status=exc.status) from None
        except _Retryable as exc:
            attempt.status, attempt.error = exc.status, redact(str(exc), key)
            attempt.duration_ms = (time.perf_counter() - t0) * 1000
            last_status = exc.status
            if exc.status is not None and exc.headers is not None:
                state.observe(exc.status, exc.headers)  # a 429 halves the concurrency cap
            if exc.status == 429 or exc.retry_after:
                state.block(exc.retry_after if exc.retry_after is not None else backoff(n, endpoint))
            if exc.retry_after is not None and exc.retry_after > endpoint.max_retry_after_s:
                raise ProviderError(
                    f"{name}: rate limited, Retry-After {exc.retry_after:.0f}s is longer than the "
                    f"{endpoint.max_retry_after_s:.0f}s allowed",
                    attempts,
                    status=exc.status,
                ) from None
            if n == endpoint.max_retries:
                break
            attempt.wait_ms = 1000 * (
                exc.retry_after if exc.retry_after is not None else backoff(n, endpoint)
            )
            if on_restart is not None:
                on_restart(attempt.error or "retrying")
        finally:
            live.running = live.running and attempt.status is None and attempt.error is None
            await state.release()
        await asyncio.sleep(attempt.wait_ms / 1000)  # outside the concurrency slot
    tried = len(attempts)
    raise ProviderError(
        f"{name}: failed after {tried} attempt{'s' if tried > 1 else ''}: {attempts[-1].error}",
        attempts,
        status=last_status,
    )


def _estimate(estimate_input: int, draft: Draft, *, estimated: bool) -> Usage:
    chars = len(draft.text) + sum(
        len(c.get("name", "")) + len(c.get("arguments", "")) for c in draft.tool_calls
    )
    return Usage(input_tokens=estimate_input, output_tokens=max(1, (chars + 3) // 4), estimated=estimated)


def _status_error(status: int, headers: httpx.Headers, text: str, protocol: Protocol) -> Exception:
    detail = protocol.error_message(text)
    message = f"HTTP {status}: {detail}"
    feature = rejected_feature(status, detail)
    if feature is not None:
        return _Unsupported(message, status, feature)
    if status == 429 or status >= 500 or status == 408:
        return _Retryable(message, status, parse_retry_after(headers.get("retry-after")), headers)
    hint = {
        401: " (check the API key in the configured environment variable)",
        403: " (the key lacks access to this model)",
        404: " (check the model name and the base URL)",
    }.get(status, "")
    return _Fatal(message + hint, status)


async def _post_once(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], payload: bytes, protocol: Protocol
) -> tuple[Draft, int, httpx.Headers]:
    try:
        resp = await client.post(url, content=payload, headers=headers)
    except httpx.TimeoutException as exc:
        raise _Retryable(f"timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code >= 400:
        raise _status_error(resp.status_code, resp.headers, resp.text, protocol)
    try:
        data = resp.json()
    except ValueError:
        raise _Retryable(f"HTTP {resp.status_code}: response is not JSON: {resp.text[:200]!r}") from None
    return protocol.parse(data), resp.status_code, resp.headers


async def _stream_once(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    url: str,
    headers: dict[str, str],
    payload: bytes,
    protocol: Protocol,
    attempt: Attempt,
    t0: float,
    on_text: TextSink | None,
    estimate_input: int,
    live: _Live,
) -> tuple[Draft, float | None, int, httpx.Headers]:
    acc = live.acc = protocol.stream_state()
    reader = _Reader(acc, on_text, live)
    try:
        if FAST_STREAMS and wire.usable(url):
            status, resp_headers = await _wire_stream(endpoint, url, headers, payload, protocol, reader)
        else:
            async with client.stream("POST", url, content=payload, headers=headers) as resp:
                if resp.status_code >= 400:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    raise _status_error(resp.status_code, resp.headers, text, protocol)
                events = Events(reader)
                async for chunk in resp.aiter_bytes():
                    events.feed(chunk)
                status, resp_headers = resp.status_code, resp.headers
        return acc.draft, reader.first, status, resp_headers
    except (_Retryable, _Fatal) as exc:
        _bill_partial(acc.draft, attempt, estimate_input, reader.first)
        raise exc from None
    except httpx.TimeoutException as exc:
        _bill_partial(acc.draft, attempt, estimate_input, reader.first)
        raise _Retryable(f"timed out ({type(exc).__name__})" + _after(reader.first, t0)) from None
    except httpx.TransportError as exc:
        _bill_partial(acc.draft, attempt, estimate_input, reader.first)
        raise _Retryable(
            f"connection failed: {type(exc).__name__}: {exc}" + _after(reader.first, t0)
        ) from None


async def _wire_stream(
    endpoint: Endpoint, url: str, headers: dict[str, str], payload: bytes, protocol: Protocol, reader: _Reader
) -> tuple[int, httpx.Headers]:
    """The streamed request on `wire`'s pool: the body's bytes go to the SSE parser as they arrive."""
    pool = _pool()
    resp, conn = await pool.open(
        url,
        headers,
        payload,
        connect_timeout=endpoint.connect_timeout_s,
        read_timeout=endpoint.read_timeout_s,
    )
    try:
        if resp.status_code >= 400:
            text = (await resp.read()).decode("utf-8", "replace")
            raise _status_error(resp.status_code, resp.headers, text, protocol)
        await resp.pipe(Events(reader).feed)
        return resp.status_code, resp.headers
    finally:
        pool.release(conn)


class _Reader:
    """What a streamed attempt does with each SSE event: parse its JSON, accumulate it, time the first
    token, hand the text on. Called from the SSE parser (on `wire`'s path, in the loop's read callback)."""

    __slots__ = ("acc", "first", "live", "on_text")

    def __init__(self, acc: StreamState, on_text: TextSink | None, live: _Live) -> None:
        self.acc = acc
        self.on_text = on_text
        self.live = live
        self.first: float | None = None

    def __call__(self, event: str | None, data: bytes) -> None:
        if data == b"[DONE]":
            return  # read on to the end of the body, so the connection goes back to the pool
        try:
            obj = orjson.loads(data)  # a quarter of json.loads' time, on every chunk
        except ValueError:
            try:  # what orjson refuses and json reads: integers past 64 bits, NaN
                obj = json.loads(data)
            except ValueError:
                shown = data[:120].decode("utf-8", "replace")
                raise _Retryable(f"malformed JSON in stream chunk: {shown!r}") from None
        if not isinstance(obj, dict):
            raise _Retryable(f"unexpected stream chunk: {data[:120].decode('utf-8', 'replace')!r}")
        acc = self.acc
        failure = acc.error(event, obj)
        if failure is not None:
            status = 529 if "overloaded" in failure.lower() else 500
            raise _Retryable(f"error event in stream: {failure}", status)
        delta = acc.feed(event, obj)
        if delta is not None and self.first is None:
            self.first = self.live.first = time.perf_counter()
        if delta and self.on_text is not None:
            self.on_text(delta)


def _after(first: float | None, t0: float) -> str:
    return " (stream dropped after output began)" if first is not None else ""


def _bill_partial(draft: Draft, attempt: Attempt, estimate_input: int, first: float | None) -> None:
    """A broken attempt that produced tokens is billed by the provider: record what it probably cost."""
    if first is None and draft.usage is None:
        return
    if draft.usage is not None and draft.usage.output_tokens:
        attempt.usage = Usage(**{**draft.usage.__dict__, "estimated": True})
        return
    base = draft.usage or Usage(input_tokens=estimate_input)
    out = _estimate(estimate_input, draft, estimated=True)
    attempt.usage = Usage(
        input_tokens=base.input_tokens or estimate_input,
        output_tokens=out.output_tokens,
        cache_read_tokens=base.cache_read_tokens,
        cache_write_tokens=base.cache_write_tokens,
        cache_write_1h_tokens=base.cache_write_1h_tokens,
        estimated=True,
    )
