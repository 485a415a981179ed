"""Looking inside trained models (``lab-inspect``, ``lab-generate``): a run's model and one
observed forward pass (``trained``), attention maps, losses by token and position, probes,
attributions, a sweep's summary against N, μP's coordinate check (``coord``), sampling."""

from lab._lazy import exports

_PUBLIC = {"Run": "trained", "trace": "trained", "coord_check": "coord"}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
