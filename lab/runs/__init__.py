"""What a run folder holds and how it is read back: safe writes and reads (``files``),
records and the sweep's table (``records``), checkpoints, the folder's claim (``claim``), metrics sinks and trackers
(``trackers``), trained models (``artifacts.load_model``) and their Hugging Face exports."""

from lab._lazy import exports

_PUBLIC = {
    **dict.fromkeys(("read_record", "read_records"), "records"),
    **dict.fromkeys(("write_atomic", "write_json_atomic", "read_jsonl"), "files"),
    **dict.fromkeys(("save_checkpoint", "load_checkpoint"), "checkpoint"),
    "make_trackers": "trackers",
    "load_model": "artifacts",
}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
