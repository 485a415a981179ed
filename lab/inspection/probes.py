"""Linear probes on frozen hidden states, for token properties the corpus defines itself.

For the default code corpus every property is computed from the text, with no hand labels:

- ``newline_next``: the next byte is a newline (2 classes);
- ``indent``: the indentation depth of the current line, in steps of 4 spaces (0-4+);
- ``in_string``: the position is inside a string literal ('', "", triple quotes) (2 classes);
- ``bracket_depth``: how many ( [ { are open at the position (0-3+).

A probe is a multinomial logistic regression from one layer's hidden state at a position
to that position's label, trained on some windows and scored on others. Each is reported
beside two floors, so a high accuracy means something (Hewitt & Liang 2019, "Designing and
Interpreting Probes with Control Tasks"): the majority-class baseline, and a control task,
the same probe trained and scored on shuffled labels (what a probe of this capacity reaches
from the label distribution alone). Selectivity = accuracy − control accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lab.inspection.trained import Run, save_figure, trace

PROBES = ("newline_next", "indent", "in_string", "bracket_depth")


def labels(text: str, prop: str) -> np.ndarray:
    """One label per character of ``text`` for property ``prop``. Raises ValueError for an
    unknown property, naming the known ones."""
    if prop not in PROBES:
        raise ValueError(f"unknown probe {prop!r}; probes are {PROBES}")
    n = len(text)
    out = np.zeros(n, dtype=np.int64)
    if prop == "newline_next":
        for i in range(n - 1):
            out[i] = text[i + 1] == "\n"
        return out
    if prop == "indent":  # the indentation of the line a position is on
        pos = 0
        for line in text.splitlines(keepends=True):
            spaces = len(line) - len(line.lstrip(" "))
            out[pos : pos + len(line)] = min(spaces // 4, 4)
            pos += len(line)
        return out
    in_string, in_comment = _lex(text)
    if prop == "in_string":
        return in_string
    depth = 0  # bracket_depth, counting only brackets of code (not in strings or comments)
    for i, ch in enumerate(text):
        code = not in_string[i] and not in_comment[i]
        if code and ch in "([{":
            depth += 1
        out[i] = min(depth, 3)
        if code and ch in ")]}":
            depth = max(0, depth - 1)
    return out


def _lex(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the positions inside string literals and inside comments (a small Python
    lexer: quotes, triple quotes, backslash escapes, # comments)."""
    n = len(text)
    in_string = np.zeros(n, dtype=np.int64)
    in_comment = np.zeros(n, dtype=np.int64)
    quote, i = None, 0
    while i < n:
        ch = text[i]
        if quote is None:
            if ch == "#":
                j = text.find("\n", i)
                j = n if j < 0 else j
                in_comment[i:j] = 1
                i = j
                continue
            if ch in "'\"":
                quote = ch * 3 if text[i : i + 3] == ch * 3 else ch
                in_string[i : i + len(quote)] = 1
                i += len(quote)
                continue
        else:
            in_string[i] = 1
            if ch == "\\":
                in_string[i + 1 : i + 2] = 1
                i += 2
                continue
            if text[i : i + len(quote)] == quote:
                in_string[i : i + len(quote)] = 1
                i += len(quote)
                quote = None
                continue
            if ch == "\n" and len(quote) == 1:
                quote = None
        i += 1
    return in_string, in_comment


def fit_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    steps: int = 200,
    weight_decay: float = 1e-3,
) -> float:
    """Accuracy on the test positions of a multinomial logistic regression trained on the
    training positions (features standardised on the training set; L-BFGS)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt, xs = (x_train - mean) / std, (x_test - mean) / std
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(0)
    linear = torch.nn.Linear(xt.shape[1], n_classes)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(linear(xt), y_train)
            + weight_decay * linear.weight.pow(2).sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((linear(xs).argmax(1) == y_test).float().mean())


def probe_layers(hidden: list[torch.Tensor], y: np.ndarray, seed: int = 0) -> list[dict]:
    """Probe every layer's hidden states (N, d) for labels y (N,): accuracy, control-task
    accuracy (shuffled labels) and the majority baseline, on a held-out 30% of positions."""
    rng = np.random.default_rng(seed)
    n = y.size
    order = rng.permutation(n)
    cut = int(0.7 * n)
    tr, te = torch.as_tensor(order[:cut]), torch.as_tensor(order[cut:])
    yt = torch.as_tensor(y)
    shuffled = torch.as_tensor(rng.permutation(y))
    majority = float(np.mean(y[order[cut:]] == np.bincount(y[order[:cut]]).argmax()))
    rows = []
    for layer, h in enumerate(hidden):
        h = h.float()
        acc = fit_probe(h[tr], yt[tr], h[te], yt[te])
        control = fit_probe(h[tr], shuffled[tr], h[te], shuffled[te])
        rows.append(
            {
                "layer": layer,
                "accuracy": acc,
                "control": control,
                "majority": majority,
                "selectivity": acc - control,
            }
        )
    return rows


# -- on a trained model ---------------------------------------------------------------
def probe_run(run: Run, probes: list[str], windows: int = 24) -> dict[str, list[dict]]:
    """Every probe on every layer, on windows of the run's validation text."""
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; probes are {PROBES}")
    if getattr(run.tokenizer, "name", "") != "bytes":
        raise ValueError(
            "probes need a byte-level model (data.tokenizer=bytes): labels are per byte"
        )
    length = run.model.cfg.n_positions
    ids = torch.as_tensor(run.val_windows(windows, length))
    hidden = [h.reshape(-1, h.shape[-1]) for h in trace(run.model, ids)["hidden"]]
    texts = [
        "".join("\n" if i == 256 else chr(i) for i in row) for row in ids.tolist()
    ]  # one char a byte
    results = {}
    for prop in probes:
        y = np.concatenate([labels(t, prop) for t in texts])
        results[prop] = probe_layers(hidden, y)
    return results


def probe_figure(results: dict, out: Path) -> Path:
    """Each probe's accuracy by layer, beside its shuffled-label control."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.4), squeeze=False)
    for ax, (prop, rows) in zip(axes[0], results.items()):
        layers = [r["layer"] for r in rows]
        ax.plot(layers, [r["accuracy"] for r in rows], "o-", label="probe")
        ax.plot(layers, [r["control"] for r in rows], "s--", label="control (shuffled labels)")
        ax.axhline(rows[0]["majority"], color="gray", ls=":", label="majority class")
        ax.set_title(prop, fontsize=10)
        ax.set_xlabel("layer (0: embeddings)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out / "probes.png")
