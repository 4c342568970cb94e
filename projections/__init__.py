"""The read side: the pure fold of events into documents (shipped as streamstore.projections)."""

from streamstore.projections.fold import apply_change, apply_event, fold, fold_changes

__all__ = ["apply_change", "apply_event", "fold", "fold_changes"]
