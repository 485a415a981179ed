"""The model: a GPT-style decoder built from ``kernels``' ops (``GPT``), and its
parametrization as the optimizer sees it (``param_groups``: weight decay and μP's rates)."""

from lab._lazy import exports

_PUBLIC = {"GPT": "gpt", "param_groups": "parametrization", "build_optimizer": "parametrization"}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
