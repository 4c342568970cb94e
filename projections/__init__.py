"""The read side: the fold, replay, and subscribers (shipped as streamstore.projections)."""

from streamstore.projections.fold import apply_change, apply_event, fold, fold_changes
from streamstore.projections.runner import Runner, check_health
from streamstore.projections.subscriber import Change, Subscriber, subscriber

__all__ = [
    "Change",
    "Runner",
    "Subscriber",
    "apply_change",
    "apply_event",
    "check_health",
    "fold",
    "fold_changes",
    "subscriber",
]
