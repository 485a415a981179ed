"""What a run is, before anything runs: its settings (the dataclasses Hydra composes onto,
``compose``, ``validate``), its N and C under each counting convention, and the record
schema the lab writes and ``analysis`` reads. No module here imports another wing."""

from lab._lazy import exports

_PUBLIC = {
    **dict.fromkeys(
        ("Config", "ModelConfig", "DataConfig", "OptimConfig", "TrainConfig"), "schema"
    ),
    **dict.fromkeys(("from_dict", "to_dict", "config_hash"), "schema"),
    "validate": "rules",
    "compose": "composition",
    **dict.fromkeys(("param_counts", "flops_per_token", "training_flops"), "counting"),
    **dict.fromkeys(("N_CONVENTIONS", "C_CONVENTIONS", "LOSSES"), "record"),
    **dict.fromkeys(("DEFAULT_N_CONVENTION", "DEFAULT_C_CONVENTION", "DEFAULT_LOSS"), "record"),
}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
