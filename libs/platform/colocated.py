"""Several stages in one process: the ``pipeline`` process of ``MAILMOAT_TOPOLOGY=colocated``
(docs/decisions/012).

Each stage keeps its own ``Runtime`` (its queue, its consumer, its metrics port, its trace records), so a
message published to a stage's queue is handled exactly as with a process per stage. What changes is the
hand-over between stages of the same process: when a stage's handler returns a publish to the queue of a
stage that runs here, that stage's handler is called at once, in the same delivery, instead of through the
broker (``Runtime._hand_over``); only the last outputs are published, and the first stage's delivery is
acked once they are confirmed. The message is never held only in memory: until those publishes are
confirmed, the first stage's delivery is unacked and the broker still holds the message. When a stage of
the chain fails (a temporary failure, an error, a stage stopping), the message as it was handed to that
stage is published to its queue instead, and that stage's consumer takes it from there as it would any
message (its retries, its delivery limit, its dead-letter queue).

This module is the registry of the process's stages; ``mailmoat run pipeline`` (``mailmoat_cli.pipeline``)
starts them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailmoat_platform import stages

if TYPE_CHECKING:
    from mailmoat_platform.runtime import Runtime

PIPELINE = "pipeline"
"""Name of the process that runs the stages between ingress and egress together."""
MAX_CHAIN = 16
"""Stages handed over in memory within one delivery at most (a guard against an itinerary that loops)."""


@dataclass(frozen=True)
class Local:
    """A stage of this process: its runtime and handler."""

    runtime: Runtime
    stage: str
    handler: Callable[[Any, bytes], Awaitable[list[Any]]]


_enabled = False
_local: dict[str, Local] = {}


def enable() -> None:
    """Hand messages over in memory between the stages this process consumes from now on."""
    global _enabled
    _enabled = True


def disable() -> None:
    """Back to a process per stage (tests)."""
    global _enabled
    _enabled = False
    _local.clear()


def register(queue: str, runtime: Runtime, stage: str, handler: Callable[[Any, bytes], Awaitable[list[Any]]]) -> None:
    """Note that ``stage`` consumes ``queue`` in this process (only when enabled)."""
    if _enabled:
        _local[queue] = Local(runtime, stage, handler)


def forget(runtime: Runtime) -> None:
    """No more hand-overs to the stages of ``runtime`` (it is stopping)."""
    for queue in [q for q, local in _local.items() if local.runtime is runtime]:
        del _local[queue]


def local(queue: str) -> Local | None:
    """The stage of this process that consumes ``queue``, if any and not stopping."""
    if not _local:
        return None
    found = _local.get(queue)
    if found is None or found.runtime.stopping:
        return None
    return found


def process_name(service: str) -> str:
    """The name log lines give the process: ``pipeline`` for stages run together, else the service's."""
    return PIPELINE if _enabled else service


def pipeline_stages() -> list[str]:
    """The stages of the ``pipeline`` process: every filter stage of the registry (the policy's
    ``pipeline.filters`` decides which a message visits, so a reload needs no new process) and routing."""
    return [s.name for s in stages.filters()] + [s.name for s in stages.of_kind("routing")]


def active() -> bool:
    """Whether any stage of this process takes hand-overs (one dictionary look-up per delivery otherwise)."""
    return bool(_local)
