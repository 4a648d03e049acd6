"""Following a real federation from its Pods' logs: the workload's ``FL-*``
lines (see ``workloads/iflearner/README.md``) turned into progress a person
reads, and the final metric. Parsing is pure; :class:`LogFollower` only keeps
how much of each Pod's log was already seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

EVENTS = ("FL-START", "FL-MASK", "FL-EPOCH", "FL-ROUND", "FL-DONE", "FL-SERVER")


@dataclass(frozen=True)
class Event:
    kind: str
    fields: dict[str, str]

    def number(self, key: str) -> float | None:
        try:
            return float(self.fields[key])
        except (KeyError, ValueError):
            return None


def parse_event(line: str) -> Event | None:
    words = line.strip().split()
    if not words or words[0] not in EVENTS:
        return None
    return Event(words[0], dict(w.split("=", 1) for w in words[1:] if "=" in w))


def describe(event: Event) -> str | None:
    """One line for a person, or None for events not worth a line."""
    party = event.fields.get("party", "?")
    if event.kind == "FL-EPOCH":
        return (f"{party} epoch {event.fields.get('epoch')}: loss {event.number('loss'):.4f}, "
                f"accuracy {event.number('accuracy'):.3f}")
    if event.kind == "FL-MASK":
        # Never the mask itself: a person needs to know it happened, not its value.
        return f"{party} exchanged keys and masks with {event.fields.get('peers')} peer(s): its uploads are masked"
    if event.kind == "FL-ROUND":
        return (f"{party} round {event.fields.get('epoch')} aggregated by the server in "
                f"{event.number('round_s'):.1f}s: global accuracy {event.number('global_accuracy'):.3f}")
    if event.kind == "FL-DONE":
        return (f"{party} done after {event.fields.get('epochs')} epochs: final loss {event.number('loss'):.4f}, "
                f"accuracy {event.number('accuracy'):.3f}")
    if event.kind == "FL-SERVER":
        return f"server: {' '.join(f'{k}={v}' for k, v in event.fields.items())}"
    return None


def final_metrics(events: list[Event]) -> dict[str, tuple[float, float]]:
    """party -> (loss, accuracy) of its FL-DONE line."""
    return {e.fields.get("party", "?"): (e.number("loss") or 0.0, e.number("accuracy") or 0.0)
            for e in events if e.kind == "FL-DONE"}


@dataclass
class LogFollower:
    """New lines of each Pod's log since the last call (logs are re-read whole:
    they are short, and a restarted read never repeats or skips a line)."""

    # The kubernetes client returns None, not "", for the log of a container
    # that has started but printed nothing yet.
    read_log: Callable[[str], str | None]
    seen: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def new_events(self, pod: str) -> list[Event]:
        try:
            text = self.read_log(pod) or ""
        except Exception:  # noqa: BLE001 - a Pod without a container yet has no log
            return []
        self.texts[pod] = text
        lines = text.splitlines()
        fresh = lines[self.seen.get(pod, 0):]
        self.seen[pod] = len(lines)
        return [e for e in (parse_event(line) for line in fresh) if e is not None]
