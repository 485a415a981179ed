"""The data: text sources (files, folders, JSONL, Parquet, the stdlib corpus) and
pre-tokenized ``.bin`` files (``sources``), tokenizers (``tokenizer``), and the tokenized,
cached corpus with its batches and evaluation windows (``corpus``)."""

from lab._lazy import exports

_PUBLIC = {
    **dict.fromkeys(("Corpus", "load_corpus", "random_batch", "eval_windows"), "corpus"),
    "ByteTokenizer": "tokenizer",
    "open_source": "sources",
}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
