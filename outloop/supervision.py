"""The supervisor's decisions, apart from any process or I/O: what to do with the components of a
stack (:class:`Supervision`: the embedded broker, the worker and, by their restart policy, the others)
and when to prove the forwarder's sent journal stored (:class:`JournalConfirmation`).
``outloop.runtime.Stack`` observes the components and carries the decisions out; time is passed in
(monotonic seconds).
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from outloop.streams.lifecycle import Restart


class Action(enum.Enum):
    NONE = "none"
    RESTART = "restart"  # the broker exited on its own: kill the worker, restart both
    FAIL = "fail"  # give up: stop everything, report the reason
    START_DRAIN = "start_drain"  # the broker is too big: pause the forwarder, publish a drain marker
    CHECK_DRAIN = "check_drain"  # is everything that reached the broker in DuckDB?
    ABORT_DRAIN = "abort_drain"  # not drained in time: resume the forwarder, try again later
    RECYCLE = "recycle"  # drained: restart broker and worker on purpose
    UNSTICK = "unstick"  # the worker has held no partition too long: kill the broker, restart both
    RESTART_WORKER = "restart_worker"  # the worker exited (the broker is alive): start a fresh one
    RESTART_ALONE = "restart_alone"  # a component restarted on its own exited (router, forwarder, tailer)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    component: str = ""  # the name of the component it is about (RESTART*, UNSTICK), else ""


@dataclass(frozen=True)
class Observed:
    """One component as the supervisor saw it: its name, its restart policy, whether it runs."""

    name: str
    policy: Restart
    alive: bool


class Supervision:
    """What to do with the embedded broker and the worker, from observations; no I/O, ``now`` is a
    monotonic time in seconds.

    * the broker is dead -> RESTART, unless it died ``max_restarts`` times within ``window`` s
      already -> FAIL (a crash loop is not hidden);
    * the worker is dead (and the broker alive) -> RESTART_WORKER: it stops on a batch it could not
      deliver, when its sink process exits, or when the kernel kills it; it counts toward
      ``max_restarts`` like a broker exit, so a worker that stops again at every start -> FAIL;
    * broker RSS above ``max_rss`` (bytes; 0 never) -> START_DRAIN, then CHECK_DRAIN on every
      observation until :meth:`drain_checked` reports it drained (-> RECYCLE) or ``drain_timeout``
      passed (-> ABORT_DRAIN; no new drain for ``drain_backoff`` s, so a busy pipeline is not
      paused over and over);
    * the worker (alive, broker alive) reported holding no partition on every observation for
      ``stall_after`` s (0 never) -> UNSTICK: its consumer group does not settle (Tansu 0.6 can
      keep naming a departed leader); it counts toward ``max_restarts`` like a broker exit.
      ``assigned`` None (no answer) neither starts nor ends that span.
    """

    def __init__(self, max_rss: int, max_restarts: int = 10, window: float = 600.0,
                 drain_timeout: float = 120.0, drain_backoff: float = 300.0, stall_after: float = 0.0) -> None:
        self.max_rss = max_rss
        self.max_restarts = max_restarts
        self.window = window
        self.drain_timeout = drain_timeout
        self.drain_backoff = drain_backoff
        self.crashes: collections.deque[float] = collections.deque()
        self.draining_since: float | None = None
        self.next_drain = float("-inf")
        self.stall_after = stall_after
        self.unassigned_since: float | None = None

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def observe(self, now: float, *, broker_alive: bool, worker_alive: bool, rss: int | None,
                assigned: int | None = None) -> Decision:
        while self.crashes and self.crashes[0] <= now - self.window:
            self.crashes.popleft()
        if not broker_alive:
            self.draining_since = self.unassigned_since = None
            if len(self.crashes) >= self.max_restarts:
                return Decision(Action.FAIL, f"the embedded broker exited {len(self.crashes) + 1} times within "
                                             f"{self.window:.0f}s; giving up")
            self.crashes.append(now)
            return Decision(Action.RESTART, "the embedded broker exited")
        if not worker_alive:
            self.unassigned_since = None  # a fresh worker starts holding nothing
            if len(self.crashes) >= self.max_restarts:
                return Decision(Action.FAIL, f"the worker stopped, with {len(self.crashes)} restarts within "
                                             f"{self.window:.0f}s already; giving up")
            self.crashes.append(now)
            return Decision(Action.RESTART_WORKER, "the worker stopped")
        if self.draining_since is not None:
            if now - self.draining_since > self.drain_timeout:
                self.draining_since = None
                self.next_drain = now + self.drain_backoff
                return Decision(Action.ABORT_DRAIN, f"not drained within {self.drain_timeout:.0f}s; "
                                                    f"next attempt in {self.drain_backoff:.0f}s")
            return Decision(Action.CHECK_DRAIN)
        stalled = self._stalled(now, assigned)
        if stalled is not None:
            return stalled
        if self.max_rss and rss is not None and rss > self.max_rss and now >= self.next_drain:
            self.draining_since = now
            return Decision(Action.START_DRAIN, f"broker RSS {rss / 2**20:.0f} MB > {self.max_rss / 2**20:.0f} MB")
        return Decision(Action.NONE)

    def observe_components(self, now: float, components: Sequence[Observed], *, rss: int | None,
                           assigned: int | None = None) -> list[Decision]:
        """The decisions for one observation of every component, by restart policy: each exited
        :attr:`Restart.ALONE` component -> RESTART_ALONE (uncounted: what it serves fails open
        meanwhile); then one decision of :meth:`observe`, where the :attr:`Restart.STACK` components
        play the broker (all alive, or none there: an external broker) and the
        :attr:`Restart.COUNTED` ones the worker (alive only when there is one and it runs)."""
        decisions = [Decision(Action.RESTART_ALONE, f"the {c.name} exited", c.name)
                     for c in components if c.policy is Restart.ALONE and not c.alive]
        stack = [c for c in components if c.policy is Restart.STACK]
        counted = [c for c in components if c.policy is Restart.COUNTED]
        stack_alive = all(c.alive for c in stack)
        counted_alive = bool(counted) and all(c.alive for c in counted)
        d = self.observe(now, broker_alive=stack_alive, worker_alive=counted_alive, rss=rss, assigned=assigned)
        if d.action in (Action.RESTART, Action.UNSTICK):
            d = replace(d, component=next((c.name for c in stack if not c.alive), stack[0].name if stack else ""))
        elif d.action is Action.RESTART_WORKER:
            d = replace(d, component=next((c.name for c in counted if not c.alive), ""))
        return [*decisions, d]

    def _stalled(self, now: float, assigned: int | None) -> Decision | None:
        if not self.stall_after or assigned is None:
            return None
        if assigned > 0:
            self.unassigned_since = None
            return None
        if self.unassigned_since is None:
            self.unassigned_since = now
        if now - self.unassigned_since < self.stall_after:
            return None
        span, self.unassigned_since = now - self.unassigned_since, None
        if len(self.crashes) >= self.max_restarts:
            return Decision(Action.FAIL, f"the worker has held no partition for {span:.0f}s and the broker was "
                                         f"restarted {len(self.crashes)} times within {self.window:.0f}s; giving up")
        self.crashes.append(now)
        return Decision(Action.UNSTICK, f"the worker has held no partition for {span:.0f}s with the broker up "
                                        f"(its consumer group does not settle)")

    def drain_checked(self, now: float, drained: bool) -> Decision:
        if self.draining_since is None:
            return Decision(Action.NONE)
        if drained:
            self.draining_since = None
            return Decision(Action.RECYCLE, "the pipeline is drained")
        return Decision(Action.NONE)

    def drain_failed(self, now: float, reason: str) -> Decision:
        """The drain could not even start (e.g. the forwarder did not pause): back off."""
        self.draining_since = None
        self.next_drain = now + self.drain_backoff
        return Decision(Action.ABORT_DRAIN, reason)


class JournalConfirmation:
    """When to prove the forwarder's sent journal stored in DuckDB (pure; ``now`` monotonic).

    Every ``every`` s with a non-empty journal, a snapshot of its ids is taken and a flush marker
    published behind them on every input partition; once the marker reached every output partition
    in DuckDB, everything in the snapshot is stored and can leave the journal. A broker restart
    voids a pending proof (its marker died with the log); one that takes longer than ``timeout``
    is given up and tried again."""

    def __init__(self, every: float, timeout: float = 600.0) -> None:
        self.every = every
        self.timeout = timeout
        self.next_at: float | None = None  # the first proof comes ``every`` s after the first look
        self.pending: tuple[str, list[str], float] | None = None  # marker, ids, published at

    def due(self, now: float, journal_entries: int) -> bool:
        if self.next_at is None:
            self.next_at = now + self.every
        if not self.every or self.pending is not None or now < self.next_at:
            return False
        if journal_entries == 0:
            self.next_at = now + self.every
            return False
        return True

    def started(self, now: float, marker: str, ids: list[str]) -> None:
        self.pending = (marker, ids, now)

    def expired(self, now: float) -> bool:
        if self.pending is not None and now - self.pending[2] > self.timeout:
            self.void(now)
            return True
        return False

    def confirmed(self, now: float) -> list[str]:
        ids = self.pending[1] if self.pending else []
        self.void(now)
        return ids

    def void(self, now: float) -> None:
        self.pending = None
        self.next_at = now + self.every
