"""Which input tokens a prediction rests on: Shapley values and Integrated Gradients, with
Captum (PyTorch's attribution library, an optional extra: ``pip install -e .[attribution]``).

The explained quantity is f(ids) = log p(target | ids[:position + 1]), the model's
log-probability of ``target`` as the token after ``position``. Every method compares the
text with a baseline, the same text with tokens replaced by one neutral token (a space
where the tokenizer has one):

- ``shap``: Shapley value sampling (Castro et al. 2009; Štrumbelj & Kononenko 2010) over
  the input tokens, each token a player, an absent one set to the baseline token. The
  values of a prediction sum to f(text) − f(baseline) (efficiency), and a token the
  prediction cannot see (after ``position``, in a causal model) gets exactly zero.
- ``ig``: Integrated Gradients (Sundararajan et al. 2017) on the token embeddings, from
  the baseline's embeddings to the text's, summed over each token's embedding; their sum
  is f(text) − f(baseline) up to the integral's error, which is reported
  (``ig_convergence_delta``).

Works for every token mixer: it only calls the model.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from lab.inspection.trained import Run

METHODS = ("shap", "ig")


def _captum():
    try:
        import captum.attr as attr
    except ImportError:
        raise ValueError(
            "attribution needs Captum, an optional extra: pip install -e '.[attribution]'"
        ) from None
    return attr


def log_prob_fn(model, position: int, target: int):
    """ids (n, T) → (n,): log p(target | ids[:, :position + 1]) under ``model`` (eval)."""

    def f(ids: torch.Tensor) -> torch.Tensor:
        logits, _ = model(ids)
        return torch.log_softmax(logits[:, position].float(), dim=-1)[:, target]

    return f


def attribute(
    model,
    ids: torch.Tensor,
    position: int,
    target: int,
    baseline_id: int,
    methods=METHODS,
    n_samples: int = 32,
    n_steps: int = 64,
    seed: int = 0,
) -> dict:
    """Attributions of f (``log_prob_fn``) to each token of ``ids`` (1, T), per method,
    with f at the text and at the baseline. Raises ValueError for an unknown method."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution method {unknown[0]!r}; methods are {METHODS}")
    attr = _captum()
    model.eval()
    f = log_prob_fn(model, position, target)
    baseline = torch.full_like(ids, baseline_id)
    with torch.no_grad():
        out = {"f_text": float(f(ids)[0]), "f_baseline": float(f(baseline)[0])}
    if "shap" in methods:
        torch.manual_seed(seed)  # the sampled permutations
        with torch.no_grad():
            values = attr.ShapleyValueSampling(f).attribute(
                ids, baselines=baseline_id, n_samples=n_samples, perturbations_per_eval=16
            )
        out["shap"] = values[0].double().tolist()
    if "ig" in methods:
        ig = attr.LayerIntegratedGradients(f, model.wte)
        values, delta = ig.attribute(
            ids, baselines=baseline, n_steps=n_steps, return_convergence_delta=True
        )
        out["ig"] = values[0].sum(-1).double().tolist()  # (T, d) → one value per token
        out["ig_convergence_delta"] = float(delta[0])
    return out


def baseline_token(tokenizer) -> int:
    """The id of a single space when the tokenizer spells it as one token, else 0."""
    try:
        ids = list(tokenizer.encode(b" "))
    except Exception:  # noqa: BLE001 - any tokenizer: fall back to id 0
        return 0
    return int(ids[0]) if len(ids) == 1 else 0


def _colour(v: float, top: float) -> str:
    a = min(1.0, abs(v) / top) if top > 0 else 0.0
    return f"rgba(220,40,40,{a:.2f})" if v >= 0 else f"rgba(40,90,220,{a:.2f})"


def write_figures(tokens: list[str], result: dict, out: Path) -> list[Path]:
    """The text coloured by each method's attributions (red: raises the target's
    probability, blue: lowers it; one scale per method) as HTML and PNG, and the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if m in result]
    head = (
        f"explaining log p({result['target_text']!r} | text up to position "
        f"{result['position']}) = {result['f_text']:.3f}; baseline {result['f_baseline']:.3f}"
    )
    rows = []
    for m in methods:
        values = result[m]
        top = max((abs(v) for v in values), default=0.0)
        spans = "".join(
            f"<span style='background:{_colour(v, top)}' title='{v:+.4f}'>{html.escape(t)}</span>"
            for t, v in zip(tokens, values)
        )
        rows.append(f"<p><b>{m}</b> (sum {sum(values):+.3f})</p><pre>{spans}</pre>")
    page = f"<html><body><p>{html.escape(head)}</p>{''.join(rows)}</body></html>"
    (out / "attribution.html").write_text(page)
    (out / "attribution.json").write_text(json.dumps({**result, "tokens": tokens}, indent=2))

    width = min(48, max(8, len(tokens)))
    lines_per = -(-len(tokens) // width)
    fig, axes = plt.subplots(
        len(methods),
        1,
        figsize=(width * 0.26, (0.32 * lines_per + 0.7) * len(methods)),
        squeeze=False,
    )
    for ax, m in zip(axes[:, 0], methods):
        values = np.asarray(result[m])
        top = float(np.abs(values).max()) or 1.0
        for i, (tok, v) in enumerate(zip(tokens, values)):
            r, c = divmod(i, width)
            colour = plt.cm.RdBu_r(0.5 + 0.5 * v / top)
            ax.add_patch(plt.Rectangle((c, -r - 1), 1, 1, color=colour))
            label = tok.replace("\n", "⏎") or "·"
            ax.text(c + 0.5, -r - 0.5, label[:3], ha="center", va="center", fontsize=7)
        ax.set_xlim(0, width)
        ax.set_ylim(-lines_per, 0)
        ax.axis("off")
        ax.set_title(
            f"{m}: red raises, blue lowers the target (sum {values.sum():+.3f})", fontsize=8
        )
    fig.suptitle(head, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "attribution.png", dpi=110)
    plt.close(fig)
    return [out / "attribution.png", out / "attribution.html", out / "attribution.json"]


# -- on a trained model ---------------------------------------------------------------
def attribution_run(
    run: Run,
    text: str,
    out: Path,
    position: int | None = None,
    target: str | None = None,
    methods=("shap", "ig"),
    n_samples: int = 32,
    n_steps: int = 64,
) -> tuple[list[Path], dict]:
    """Attributions of the model's next-token prediction after ``position`` (default: the
    text's last token) to the text's tokens (``attribute`` above). The target is the token
    ``target`` spells (it must be one token), else the text's own next token, else the
    model's most likely one. Raises ValueError for text longer than the context, a
    position outside the text or a target that is not one token."""
    x = run.encode(text, truncate=False)
    ids = x[0].numpy()
    position = ids.size - 1 if position is None else position
    if not 0 <= position < ids.size:
        raise ValueError(f"--position must be in [0, {ids.size - 1}] for this text, got {position}")
    if target is not None:
        spelled = run.tokenizer.encode(target.encode("utf-8"))
        if len(spelled) != 1:
            raise ValueError(f"--target {target!r} is {len(spelled)} tokens; give one token")
        target_id = int(spelled[0])
    elif position + 1 < ids.size:
        target_id = int(ids[position + 1])
    else:
        with torch.no_grad():
            target_id = int(run.model.eval()(x)[0][0, position].argmax())
    result = attribute(
        run.model,
        x,
        position,
        target_id,
        baseline_token(run.tokenizer),
        methods,
        n_samples,
        n_steps,
    )
    result.update(
        {
            "position": position,
            "target": target_id,
            "target_text": run.tokenizer.decode([target_id]),
        }
    )
    tokens = [run.tokenizer.decode([i]) for i in ids.tolist()]
    return write_figures(tokens, result, out), result
