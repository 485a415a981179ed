"""The next runs worth training (``lab-analyze design``): within a compute budget, the runs
(N, D) that most shrink the prediction interval of the loss at a target run.

The criterion is the variance of the target's log prediction after the new runs, by the
linearised fit of the law (a c-optimal design: Atkinson, Donev & Tobias 2007, "Optimum
Experimental Designs, with SAS", ch. 10), as the sandwich variance of the estimator the
law is fitted with (an M-estimator: Huber & Ronchetti 2009, "Robust Statistics", ch. 7):

    Var = gᵀ A⁻¹ B A⁻¹ g,   A = Σ_i a_i J_i J_iᵀ,   B = Σ_i b_i J_i J_iᵀ,

J_i the gradient of a run's log loss in the law's parameters, g the target's. For Huber's
loss with threshold δ on the log residual e_i ~ N(0, σ_i²), a_i = P(|e_i| < δ) and
b_i = E[ψ_δ(e_i)²]; for least squares on the loss, a_i = L_i², b_i = L_i⁴ σ_i². σ_i is the
runs' log scatter about the law near that run's D/N (``analysis.calibration.local_sigma``:
the least-trained runs sit farther from the law than the rest), so a run where the law fits
poorly adds less. With one σ and least squares this is σ² gᵀ (Σ J_i J_iᵀ)⁻¹ g; Huber's loss
with δ far below the scatter (as fitted here) is near least absolute deviations, π/2 times
that. The gradients depend on the parameters, which are uncertain, so the variance is
averaged over the bootstrap refits (a pseudo-Bayesian design). Runs are added greedily,
each the candidate that still fits in the budget and removes the most expected variance per
FLOP, or in all; each of these two designs, and a uniform grid of the budget, is then
improved by exchanging runs (Fedorov 1972, "Theory of Optimal Experiments"), and the best
kept: never worse by the criterion than the uniform grid.

Candidates are the given model sizes, each at token budgets from 2.5 to 640 tokens per
parameter (up to the span of Gadre et al. 2024's over-training), and the uniform grid's runs;
a candidate may be chosen twice (a second seed). No run takes more tokens than
``max_tokens``: the corpus's unique tokens × ``EPOCHS`` when the runs record them (repeated
data is worth almost as much as fresh for up to about 4 epochs: Muennighoff et al. 2023,
"Scaling Data-Constrained Language Models"; past that the law, which assumes fresh tokens,
no longer describes the run). ``simulate`` checks a design: synthetic runs drawn from the
fit (its law plus its scatter near each run's D/N) at the proposed runs and at a uniform
grid of the same compute, refitted, and the target's prediction interval compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.calibration import local_sigma, log_ratio, residual_sigma
from analysis.fitting import fit as fit_runs
from analysis.fitting import log_bootstrap, residuals

TOKENS_PER_PARAM = np.geomspace(2.5, 640, 9)
MAX_RUNS = 12
EPOCHS = 4  # the most passes over the corpus a candidate run may make (module docstring)
MARK = "# Written by lab-analyze design"  # the files a design may overwrite start so
STEP = 1e-4  # relative step of the numerical gradients


def gradients(law, params: dict, n, d) -> np.ndarray:
    """∂ log L / ∂ log p (∂p where p ≤ 0) for each free parameter, at runs (n, d): (runs,
    parameters)."""
    n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
    cols = []
    for k, p in params.items():
        up, down = dict(params), dict(params)
        if p > 0:
            up[k], down[k], h = p * np.exp(STEP), p * np.exp(-STEP), 2 * STEP
        else:
            up[k], down[k], h = p + STEP, p - STEP, 2 * STEP
        diff = np.log(law.predict(up, n_params=n, tokens=d)) - np.log(
            law.predict(down, n_params=n, tokens=d)
        )
        cols.append(diff / h)
    return np.column_stack(cols)


BOOT_DRAWS = 40  # bootstrap refits the criterion averages over, beside the fit itself


SIGMA_FLOOR = 1e-4  # a perfect fit still leaves some scatter


def scatter(fit, df: pd.DataFrame, floor: float = SIGMA_FLOOR):
    """σ at runs (n, d): the fitted runs' log scatter about the law near each D/N
    (``local_sigma``), at least ``floor``. Returns a function of (n, d) arrays."""
    resid, where = residuals(df, fit), log_ratio(df)

    def at(n, d) -> np.ndarray:
        n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
        s = local_sigma(resid, fit.law.n_params, where, np.log(d / n))
        return np.maximum(np.broadcast_to(np.asarray(s, float), n.shape), floor)

    return at


def _draws(fit) -> list[dict]:
    return [fit.params, *fit.samples[:BOOT_DRAWS]]


def _terms(fit, p: dict, n, d, sigma: np.ndarray):
    """Each run's gradient J and its weights a and b in A and B (module docstring) under
    the parameters ``p``."""
    from scipy.special import erf

    j = gradients(fit.law, p, n, d)
    if fit.law.fit_space == "squares":  # ∂L/∂θ = L·J; the loss's scatter is L·σ
        sq = np.asarray(fit.law.predict(p, n_params=n, tokens=d), dtype=float) ** 2
        return j, sq, sq**2 * sigma**2
    delta = fit.extra["delta"]
    c = delta / sigma
    inside = erf(c / np.sqrt(2.0))  # P(|e| < δ)
    density = np.exp(-0.5 * c**2) / np.sqrt(2 * np.pi)
    return j, inside, sigma**2 * (inside - 2 * c * density) + delta**2 * (1 - inside)


def _information(fit, draws: list[dict], n, d, sigma: np.ndarray) -> np.ndarray:
    """A and B of the module docstring for runs (n, d) with scatter ``sigma`` under each
    draw of the parameters, with a small ridge on A so a design that cannot identify the law
    still has a variance: (2, draws, parameters, parameters)."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    a, b = [], []
    for p in draws:
        j, wa, wb = _terms(fit, p, n, d, sigma)
        info = (j * wa[:, None]).T @ j
        a.append(info + np.eye(len(p)) * 1e-9 * max(np.trace(info), 1e-300))
        b.append((j * wb[:, None]).T @ j)
    return np.array([a, b])


def _variance(info: np.ndarray, g: np.ndarray) -> float:
    """The target's log-prediction variance gᵀ A⁻¹ B A⁻¹ g, averaged over the draws."""
    x = np.linalg.solve(info[0], g[..., None])[..., 0]
    return float(np.mean(np.einsum("bi,bij,bj->b", x, info[1], x)))


def max_tokens(df: pd.DataFrame) -> float | None:
    """The most tokens a proposed run may take: ``EPOCHS`` passes over the largest corpus
    the runs record (``unique_tokens``); None when they record none."""
    if "unique_tokens" not in df:
        return None
    unique = pd.to_numeric(df["unique_tokens"], errors="coerce").max()
    return float(EPOCHS * unique) if np.isfinite(unique) and unique > 0 else None


def candidates(
    sizes: dict[str, float], budget: float, k: float, most_tokens: float | None = None
) -> pd.DataFrame:
    """Every size at each tokens-per-parameter ratio whose run fits in ``budget`` (and
    takes at most ``most_tokens``)."""
    rows = [
        {"label": name, "n_params": n, "tokens": float(round(r * n)), "compute": k * n * r * n}
        for name, n in sizes.items()
        for r in TOKENS_PER_PARAM
        if k * n * r * n <= budget and (most_tokens is None or r * n <= most_tokens)
    ]
    return pd.DataFrame(rows, columns=["label", "n_params", "tokens", "compute"])


def propose(
    fit,
    df: pd.DataFrame,
    target: tuple[float, float],
    budget: float,
    sizes: dict,
    k: float,
    most_tokens: float | None = None,
) -> dict:
    """The design (module docstring) for a fit with bootstrap refits: its runs, their
    compute, and the target's expected log-prediction sd before and after. No run takes
    more than ``most_tokens`` (None: no bound)."""
    law = fit.law
    sigma_at, draws = scatter(fit, df), _draws(fit)
    grid = candidates(sizes, budget, k, most_tokens)
    if grid.empty:
        smallest = min(sizes.values())
        least = TOKENS_PER_PARAM[0] * smallest
        if most_tokens is not None and least > most_tokens:
            raise ValueError(
                f"no candidate run takes at most {most_tokens:.3g} tokens (the smallest size, "
                f"N = {smallest:.3g}, at {TOKENS_PER_PARAM[0]:.1f} tokens per parameter takes "
                f"{least:.3g}): raise --max-tokens or give smaller --sizes"
            )
        raise ValueError(
            f"--budget {budget:.3g}: no candidate run fits in it (the smallest size, "
            f"N = {smallest:.3g}, at {TOKENS_PER_PARAM[0]:.0f} tokens per parameter costs "
            f"{k * smallest * least:.3g} FLOPs)"
        )
    uniform = uniform_grid(sizes, MAX_RUNS, budget, k, most_tokens)
    uniform = uniform[uniform["tokens"] >= TOKENS_PER_PARAM[0] * uniform["n_params"] * 0.999]
    cand = pd.concat([grid, uniform]).drop_duplicates(["n_params", "tokens"]).reset_index(drop=True)
    cost = cand["compute"].to_numpy()
    cand["sigma"] = sigma_at(cand["n_params"], cand["tokens"])
    base = _information(fit, draws, *_nd(df), sigma_at(*_nd(df)))
    terms = [_terms(fit, p, *_nd(cand), cand["sigma"].to_numpy()) for p in draws]
    outer = np.array(
        [
            [np.einsum("ci,cj->cij", j * wa[:, None], j) for j, wa, _ in terms],
            [np.einsum("ci,cj->cij", j * wb[:, None], j) for j, _, wb in terms],
        ]
    )
    g = np.array([gradients(law, p, *target)[0] for p in draws])

    def variance(chosen: list[int]) -> float:
        return _variance(base + outer[:, :, chosen].sum(axis=2) if chosen else base, g)

    def greedy(per_flop: bool) -> list[int]:
        chosen, left = [], budget
        while len(chosen) < MAX_RUNS:
            now = variance(chosen)
            ok = [c for c in range(len(cand)) if cost[c] <= left and c not in chosen]
            if not ok:
                break
            gains = np.array([now - variance([*chosen, c]) for c in ok])
            score = gains / cost[ok] if per_flop else gains
            best = int(np.argmax(score))
            if gains[best] < 1e-4 * now:
                break
            chosen.append(ok[best])
            left -= cost[ok[best]]
        return chosen

    def exchange(chosen: list[int]) -> list[int]:
        """Swap a run for another, or add one, while the variance falls and the budget
        holds (Fedorov's exchange, first improvement)."""
        best, improved = variance(chosen), True
        while improved:
            improved = False
            moves = [(i, c) for i in range(len(chosen)) for c in range(len(cand))]
            if len(chosen) < MAX_RUNS:
                moves += [(None, c) for c in range(len(cand))]
            for i, c in moves:
                trial = [*chosen, c] if i is None else [*chosen[:i], c, *chosen[i + 1 :]]
                if cost[trial].sum() > budget:
                    continue
                v = variance(trial)
                if v < best * (1 - 1e-6):
                    chosen, best, improved = trial, v, True
                    break
        return chosen

    uniform_idx = [int(i) for i in cand.index[len(grid.drop_duplicates(["n_params", "tokens"])) :]]
    starts = [greedy(True), greedy(False)]
    if cost[uniform_idx].sum() <= budget * (1 + 1e-9) and len(uniform_idx) == MAX_RUNS:
        starts.append(uniform_idx)
    chosen = min((exchange(st) for st in starts), key=variance)
    runs = cand.iloc[chosen].reset_index(drop=True)
    return {
        "runs": runs.to_dict("records"),
        "compute": float(runs["compute"].sum()),
        "budget": budget,
        "sigma": residual_sigma(residuals(df, fit), law.n_params),
        "expected_sd_before": float(np.sqrt(variance([]))),
        "expected_sd_after": float(np.sqrt(variance(chosen))),
    }


def expected_sd(fit, df: pd.DataFrame, target, extra: pd.DataFrame | None = None) -> float:
    """The target's log-prediction sd by the sandwich variance of ``df``'s runs and
    ``extra`` ones, averaged over the bootstrap refits (the criterion ``propose`` lowers)."""
    runs = df if extra is None else pd.concat([df[["n_params", "tokens"]], extra])
    draws = _draws(fit)
    info = _information(fit, draws, *_nd(runs), scatter(fit, df)(*_nd(runs)))
    g = np.array([gradients(fit.law, p, *target)[0] for p in draws])
    return float(np.sqrt(_variance(info, g)))


def _nd(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return runs["n_params"].to_numpy(dtype=float), runs["tokens"].to_numpy(dtype=float)


def uniform_grid(
    sizes: dict[str, float],
    count: int,
    compute: float,
    k: float,
    most_tokens: float | None = None,
) -> pd.DataFrame:
    """``count`` runs at sizes spread evenly in log N over ``sizes`` (the nearest given
    size to each even point), all at one tokens-per-parameter ratio, the one that spends
    ``compute`` (a grid as a ladder is usually laid out: same D/N, sizes evenly apart); the
    largest sizes are left out while that ratio would be below 2.5. Runs the ratio would
    take past ``most_tokens`` take that many, and the ratio rises so that the grid still
    spends ``compute`` where it can."""
    names = sorted(sizes, key=sizes.get)
    while True:  # the largest sizes left out until every run gets 2.5 tokens per parameter
        logs = np.log([sizes[n] for n in names])
        even = np.linspace(logs[0], logs[-1], count)
        picks = [names[int(np.argmin(np.abs(logs - x)))] for x in even]
        n = np.array([sizes[m] for m in picks])
        ratio = _ratio_spending(n, compute, k, most_tokens)
        if ratio >= TOKENS_PER_PARAM[0] or len(names) == 1:
            break
        names = names[:-1]
    tokens = ratio * n if most_tokens is None else np.minimum(ratio * n, most_tokens)
    return pd.DataFrame(
        {"label": picks, "n_params": n, "tokens": tokens, "compute": k * n * tokens}
    )


def _ratio_spending(n: np.ndarray, compute: float, k: float, most_tokens: float | None) -> float:
    """The tokens-per-parameter ratio r at which runs of sizes ``n`` with min(r·n,
    ``most_tokens``) tokens spend ``compute`` (the largest useful r when they cannot)."""
    ratio = compute / (k * np.sum(n**2))
    if most_tokens is None or ratio * n.max() <= most_tokens:
        return float(ratio)
    lo, hi = ratio, most_tokens / n.min()  # past hi every run is at the bound

    def spent(r):
        return float(np.sum(k * n * np.minimum(r * n, most_tokens)))

    if spent(hi) <= compute:
        return float(hi)
    for _ in range(100):  # bisection: spent() rises with r
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if spent(mid) < compute else (lo, mid)
    return float(hi)


def simulate(
    fit,
    df: pd.DataFrame,
    target: tuple[float, float],
    designs: dict[str, pd.DataFrame],
    reps: int = 8,
    resamples: int = 100,
    seed: int = 0,
    level: float = 0.95,
    k: float = 6.0,
) -> dict:
    """For each design (a frame of n_params, tokens), and for the runs as they are, over
    ``reps`` synthetic ladders drawn from the fit (every run's loss the law's times its log
    scatter near its D/N): the median relative width of the target's prediction interval
    (a new run's loss: the law's uncertainty and the runs' scatter, which no design shrinks)
    and of the law's own interval there (the bootstrap refits' predictions), the median
    error of the refit's prediction against the law's loss, and how often the interval held
    it."""
    law = fit.law
    sigma_at = scatter(fit, df, floor=0.0)  # the scatter as fitted, unfloored
    at = {"n_params": np.array([target[0]]), "tokens": np.array([target[1]])}
    truth = float(law.predict(fit.params, **at)[0])
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2 * 100
    base = df[["n_params", "tokens"]].reset_index(drop=True)
    out = {}
    for name, extra in {"runs so far": None, **designs}.items():
        runs = base if extra is None else pd.concat([base, extra[["n_params", "tokens"]]])
        runs = runs.reset_index(drop=True)
        widths, law_widths, errors, held = [], [], [], []
        for r in range(reps):
            mean = law.predict(
                fit.params, n_params=runs["n_params"].to_numpy(), tokens=runs["tokens"].to_numpy()
            )
            noise = rng.normal(0.0, sigma_at(*_nd(runs)))
            sim = runs.assign(loss=mean * np.exp(noise))
            sim["compute"] = k * sim["n_params"] * sim["tokens"]
            refit = fit_runs(sim, law, resamples=resamples, seed=seed + r)
            p = refit.predict_interval(*target, level=level)
            widths.append((p.high - p.low) / p.predicted)
            held.append(p.low <= truth <= p.high)
            boot = log_bootstrap(law, refit.samples, at)[:, 0]
            lo, hi = np.percentile(boot, [tail, 100 - tail])
            law_widths.append(float(np.exp(hi) - np.exp(lo)) / p.predicted)
            errors.append(abs(p.predicted / truth - 1))
        out[name] = {
            "runs": len(runs),
            "median_width": float(np.median(widths)),
            "median_law_width": float(np.median(law_widths)),
            "median_abs_error": float(np.median(errors)),
            "covered": float(np.mean(held)),
        }
    return out


def sweep_files(name: str, runs: list[dict], like: dict | None, note: str) -> dict[str, str]:
    """The sweep file ``sweeps/NAME.yaml`` that trains ``runs`` (labels are the lab's
    model names) and one file per run under ``sweeps/NAME_runs/``, as the demo's sizes are
    written; ``like``, the settings of the ladder's own sweep, copied so the new runs are
    trained as the old ones were. Returns relative path → text."""
    import yaml

    group = f"{name}_runs"
    files, seen = {}, {}
    for i, r in enumerate(runs):
        key = (r["label"], int(round(r["tokens"])))
        repeat = seen[key] = seen.get(key, -1) + 1  # a run chosen twice: another seed
        files[f"{group}/run{i}.yaml"] = (
            "# @package _global_\n"
            f"{MARK}: N = {r['n_params']:.4g}, D = {r['tokens']:.4g}, C = {r['compute']:.3g}\n"
            "defaults:\n"
            f"  - override /model: {r['label']}\n"
            "data:\n"
            f"  tokens: {key[1]}\n" + (f"train:\n  seed: {repeat}\n" if repeat else "")
        )
    settings = dict(like or {})
    hydra = {
        **settings.pop("hydra", {}),
        "mode": "MULTIRUN",
        "sweep": {"dir": f"runs/{name}"},
        "sweeper": {"params": {f"+{group}": ",".join(f"run{i}" for i in range(len(runs)))}},
    }
    body = yaml.safe_dump({**settings, "hydra": hydra}, sort_keys=False)
    comment = "".join(f"# {line}\n" for line in note.splitlines())
    files[f"{name}.yaml"] = "# @package _global_\n" + comment + body
    return files


def like_settings(sweep_text: str) -> dict:
    """A sweep file's settings without its sweep: what a design's runs copy from it."""
    import yaml

    data = yaml.safe_load(sweep_text) or {}
    data.pop("defaults", None)
    hydra = data.pop("hydra", None) or {}
    kept = {k: v for k, v in hydra.items() if k not in ("mode", "sweep", "sweeper")}
    if kept:
        data["hydra"] = kept
    return data
