"""The read side: the fold, replay, and subscribers (shipped as streamstore.projections).

The built-in projections live in their own modules: `streamstore.projections.audit_log` and
`streamstore.projections.field_index`.
"""

from streamstore.projections.fold import apply_change, apply_event, fold, fold_changes
from streamstore.projections.runner import Runner, catch_up, check_health
from streamstore.projections.subscriber import Change, Subscriber, subscriber

__all__ = [
    "Change",
    "Runner",
    "Subscriber",
    "apply_change",
    "apply_event",
    "catch_up",
    "check_health",
    "fold",
    "fold_changes",
    "subscriber",
]
