"""RGB-only baseline: L_H only, no teacher (the lower bound every method is measured from)."""

from __future__ import annotations

from lix_train.distillers.base import Distiller
from lix_train.distillers.registry import register_distiller


@register_distiller("baseline")
class Baseline(Distiller):
    """Cross-entropy on the labels; a teacher, if given, is kept frozen and never run."""
