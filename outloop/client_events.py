"""What an ADW publishes through :class:`outloop.OutloopClient`: workflow runs (started, phases, ended
with totals) and the results of the tools it ran, as the same envelopes every other source sends
(``streams.publisher``: redacted, ``acks=all``, idempotent, deterministic ids).

Fail-safe: an ADW must never stop because outloop is down. Each send waits for the broker's
acknowledgement within ``timeout`` seconds; a broker that cannot be reached or does not acknowledge
makes the call return ``False`` (counted in :attr:`EventSender.dropped`, the reason in
:attr:`EventSender.last_error`), and for ``retry_after`` seconds the next calls return ``False`` at
once instead of waiting again. ``strict=True`` raises :class:`~outloop.streams.publisher.PublishError`
instead. What was dropped is not sent later: the ADW's own log is its record."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from outloop.schemas.events import ToolCall
from outloop.schemas.sizes import estimate_tokens, json_size
from outloop.streams.publisher import Publisher, PublishError
from outloop.streams.spool import uuid7

if TYPE_CHECKING:
    from outloop.streams.publisher import Delivery

log = logging.getLogger("outloop.client")
STATUSES = ("succeeded", "failed", "cancelled")


def tool_call(session_id: str, tool_name: str, tool_input: Mapping[str, Any] | str | None, *,
              output: str | None = None, output_bytes: int | None = None, is_error: bool = False,
              started_at: datetime | None = None, ended_at: datetime | None = None,
              duration_ms: float | None = None, tool_use_id: str | None = None) -> ToolCall:
    """The ``tool.call`` record of one tool an ADW ran: ``output`` is what it handed back to the model
    (its size and token estimate are stored, not its text), ``output_bytes`` when only the size is known."""
    call_id = tool_use_id or f"adw:{uuid7()}"
    data = dict(tool_input) if isinstance(tool_input, Mapping) else tool_input
    size = output_bytes if output_bytes is not None else (json_size(output) if output is not None else None)
    if duration_ms is None and started_at is not None and ended_at is not None:
        duration_ms = max(0.0, (ended_at - started_at).total_seconds() * 1000)
    command = data.get("command") if isinstance(data, dict) else None
    path = data.get("file_path") if isinstance(data, dict) else None
    return ToolCall(id=call_id, tool_use_id=call_id, call_key=None, session_id=session_id, tool_name=tool_name,
                    tool_input=data, command=command if isinstance(command, str) else None,
                    file_path=path if isinstance(path, str) else None, status="error" if is_error else "ok",
                    started_at=started_at, ended_at=ended_at, duration_ms=duration_ms,
                    input_bytes=json_size(data), output_bytes=size,
                    output_tokens_est=estimate_tokens(size) if size is not None else None,
                    reported_ms=duration_ms, source="adw")


class EventSender:
    """A lazily connected, fail-safe publisher (see the module docstring). ``broker`` is a callable so
    the address can be found when first needed (``OUTLOOP_BROKER``, else the running worker's)."""

    def __init__(self, broker: Callable[[], str | None], topic_prefix: str = "outloop", *, timeout: float = 5.0,
                 retry_after: float = 30.0, strict: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._broker = broker
        self.topic_prefix = topic_prefix
        self.timeout = timeout
        self.retry_after = retry_after
        self.strict = strict
        self._clock = clock
        self._pub: Publisher | None = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.sent = 0
        self.dropped = 0
        self.last_error: str | None = None

    def _publisher(self) -> Publisher:
        if self._pub is not None:
            return self._pub
        if self._clock() < self._down_until:
            raise PublishError(f"outloop's broker was unreachable less than {self.retry_after:g} s ago: "
                               f"{self.last_error}")
        bootstrap = self._broker()
        if not bootstrap:
            raise PublishError("no broker: OUTLOOP_BROKER is unset and no outloop worker answers")
        self._pub = Publisher(bootstrap, prefix=self.topic_prefix, timeout=self.timeout,
                              client_id="outloop-adw")
        return self._pub

    def send(self, publish: Callable[[Publisher], Delivery]) -> bool:
        """Publish one record and wait for its acknowledgement; True when the broker acknowledged it."""
        with self._lock:
            try:
                pub = self._publisher()
                delivery = publish(pub)
                pub.flush(self.timeout)
                error = delivery.error
                if error is not None or not delivery.acked:
                    raise error or PublishError("the broker did not acknowledge the record in time")
            except (PublishError, OSError) as exc:
                return self._failed(exc)
            self.sent += 1
            return True

    def _failed(self, exc: BaseException) -> bool:
        self.dropped += 1
        self.last_error = str(exc)
        self._down_until = self._clock() + self.retry_after
        if self._pub is not None:
            pub, self._pub = self._pub, None
            try:
                pub.close(timeout=1.0)
            except Exception:  # closing a broken producer must not hide the first error
                log.debug("closing the publisher failed", exc_info=True)
        if self.strict:
            raise exc if isinstance(exc, PublishError) else PublishError(str(exc), exc)
        log.warning("outloop: an event was not published (%s); the workflow goes on", exc)
        return False

    def close(self) -> None:
        with self._lock:
            if self._pub is not None:
                pub, self._pub = self._pub, None
                pub.close(timeout=self.timeout)


class WorkflowRun:
    """One run of a workflow, as :meth:`outloop.OutloopClient.start_workflow` opens it: numbers the
    phases, adds up the token totals, and publishes ``workflow.ended`` with them (once). As a context
    manager it ends the run ``succeeded``, or ``failed`` when the block raised."""

    def __init__(self, events: EventSender, run_id: str, workflow: str, session_id: str | None) -> None:
        self._events = events
        self.run_id = run_id
        self.workflow = workflow
        self.session_id = session_id
        self.seq = 0
        self.phase_name: str | None = None
        self.totals = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                       "cache_creation_input_tokens": 0}
        self.cost_usd: float | None = None
        self.ended: str | None = None
        self.started = False  # whether the broker acknowledged workflow.started

    def phase(self, name: str, at: datetime | None = None) -> bool:
        """Publish ``workflow.phase_changed`` (sequence numbers 1, 2, ...)."""
        self.seq += 1
        self.phase_name = name
        seq = self.seq
        return self._events.send(lambda p: p.workflow_phase_changed(self.run_id, name, seq, at=at))

    def add_usage(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_input_tokens: int = 0,
                  cache_creation_input_tokens: int = 0, cost_usd: float | None = None) -> None:
        """Add one model call's usage to the totals ``end`` publishes."""
        for key, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                           ("cache_read_input_tokens", cache_read_input_tokens),
                           ("cache_creation_input_tokens", cache_creation_input_tokens)):
            if value < 0:
                raise ValueError(f"{key} must not be negative")
            self.totals[key] += value
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost_usd

    def tool_result(self, tool_name: str, tool_input: Mapping[str, Any] | str | None, **kwargs: Any) -> bool:
        """Publish a tool result in this run's session (its ``session_id``, else the run id); keyword
        arguments as :func:`tool_call`."""
        call = tool_call(self.session_id or self.run_id, tool_name, tool_input, **kwargs)
        return self._events.send(lambda p: p.tool_call(call))

    def end(self, status: str = "succeeded", at: datetime | None = None) -> bool:
        """Publish ``workflow.ended`` with the totals (a second call publishes nothing, returns False)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        if self.ended is not None:
            return False
        self.ended = status
        t, cost, ended_at = dict(self.totals), self.cost_usd, at or datetime.now(UTC)
        return self._events.send(lambda p: p.workflow_ended(
            self.run_id, status, ended_at=ended_at, input_tokens=t["input_tokens"], output_tokens=t["output_tokens"],
            cache_read_input_tokens=t["cache_read_input_tokens"],
            cache_creation_input_tokens=t["cache_creation_input_tokens"], cost_usd=cost))

    def __enter__(self) -> WorkflowRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.ended is None:
            self.end("succeeded" if exc_type is None else "failed")
