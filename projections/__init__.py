"""The read side: the pure fold of events into documents (shipped as streamstore.projections)."""

from streamstore.projections.fold import apply_event, fold

__all__ = ["apply_event", "fold"]
