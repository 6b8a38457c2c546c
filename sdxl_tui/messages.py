"""Engine events as Textual messages.

Every event is posted as an `EngineEvent`. Metric events (Step, PhaseProgress) are
coalesced: when the UI falls behind, a waiting metric message is replaced by the next one
of the same kind, and the newer message carries the older events with it. The dashboard
therefore renders once for the whole backlog but still folds every step into the loss
history, so a fast engine never makes the UI lag and never punches holes in the chart.
"""
from __future__ import annotations

from textual.message import Message

from engine.events.types import Event, PhaseProgress, Step

METRIC_EVENTS = (Step, PhaseProgress)


class EngineEvent(Message):
    """One engine event (plus, for a coalesced metric, the ones it replaced)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event
        self.earlier: list[Event] = []

    @property
    def events(self) -> list[Event]:
        """Every event this message stands for, oldest first."""
        return [*self.earlier, self.event]

    def can_replace(self, message: Message) -> bool:
        """Textual's coalescing hook: True lets the newer message replace this one, after handing it this one's
        events (so the dashboard still sees every Step)."""
        # Called on the older (dequeued) message with the newer one waiting behind it; True
        # drops this one, so hand our events to the newer message first.
        if not (isinstance(message, EngineEvent) and is_metric(self.event) and is_metric(message.event)):
            return False
        if type(message.event) is not type(self.event):
            return False
        self.earlier.append(self.event)
        self.earlier.extend(message.earlier)  # normally empty: the newer message is fresh
        message.earlier = self.earlier
        return True


def is_metric(event: Event) -> bool:
    """True for the frequent events (Step, PhaseProgress) that may be coalesced when the UI lags."""
    return isinstance(event, METRIC_EVENTS)


class EventsEnded(Message):
    """The event source is exhausted (a replay reached its end, or the follower was stopped)."""
