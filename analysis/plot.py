"""Figures of runs and fitted laws (matplotlib, Agg backend: no display needed).

Each figure function takes a study (``analysis.analyze``; the loss figures and residuals
also a ``Fit`` from ``analysis.fit``), returns the matplotlib Figure,
draws on the axes given as ``ax=`` (a notebook's) or on a figure of its own, and writes
itself when given ``path=`` (PNG and SVG). ``all_figures`` writes every one that applies. Log axes are labelled in plain numbers (100k, 1M;
1.80, 2.00); fitted curves are solid within the runs' range and dashed beyond it, with the
bootstrap's percentile band shaded around them.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.approaches import chinchilla_optimum  # noqa: E402
from analysis.fitting import Fit  # noqa: E402
from analysis.load import format_si  # noqa: E402
from analysis.study import Study, flops_per_param_token  # noqa: E402
from lab.config.record import LOSS_UNITS  # noqa: E402

N_LABEL = {"non_embedding": "non-embedding parameters N", "total": "parameters N (total)"}
LABELS = {"tokens": "training tokens D", "compute": "training compute C (FLOPs)"}
FORMATS = (".png", ".svg")
SYMBOL = {"n_params": "N", "tokens": "D", "compute": "C", "unique_tokens": "U"}


def _label(df: pd.DataFrame, var: str) -> str:
    if var == "n_params":
        return N_LABEL.get(df.attrs.get("conventions", {}).get("n_params"), "parameters N")
    if var == "compute":
        conv = df.attrs.get("conventions", {}).get("compute")
        return f"training compute C (FLOPs, {conv})" if conv and conv[0] == "6" else LABELS[var]
    return LABELS[var]


def _loss_label(df: pd.DataFrame) -> str:
    name = df.attrs.get("conventions", {}).get("loss", "loss")
    return f"{str(name).replace('_', ' ')} ({LOSS_UNITS.get(name, 'as given')})"


def _log_axes(ax, plain_y: bool = True) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: format_si(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    if plain_y:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(7))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2f"))
    else:
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: format_si(v)))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)


def _span(values, extend: float = 2.0) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.geomspace(values.min() / extend, values.max() * extend, 200)


def _curve(ax, xs, ys, inside, color, band=None):
    """Solid inside the data, dashed outside, with an optional (low, high) band."""
    ax.plot(xs, np.where(inside, ys, np.nan), "-", color=color, lw=1.6)
    ax.plot(xs, np.where(inside, np.nan, ys), "--", color=color, lw=1.0, alpha=0.7)
    if band is not None:
        ax.fill_between(xs, band[0], band[1], color=color, alpha=0.12, lw=0)


def as_study(fitted):
    """A Study to draw: ``analysis.analyze``'s, or one made from a ``Fit`` (``analysis.fit``:
    its runs and bootstrap refits), for the figures that need no more than those."""
    if isinstance(fitted, Study):
        return fitted
    if isinstance(fitted, Fit) and fitted.data is not None:
        k = flops_per_param_token(fitted.data)
        return Study(fitted.data, fitted, fitted.samples, {"flops_per_param_token": k})
    raise TypeError("draws analysis.analyze's Study, or a Fit from analysis.fit")


def _band(study, **variables) -> tuple[np.ndarray, np.ndarray] | None:
    if not study.samples:
        return None
    preds = np.array([study.fit.law.predict(s, **variables) for s in study.samples])
    with np.errstate(invalid="ignore"):
        return np.nanpercentile(preds, 2.5, axis=0), np.nanpercentile(preds, 97.5, axis=0)


def loss_vs_variables(study, path=None, formats=FORMATS, ax=None) -> Figure:
    """Loss against each of the law's variables: for L(N, D), against N with one colour per
    token budget and against D with one colour per model size (``ax``: two axes to draw
    on; one for a law of one variable)."""
    study = as_study(study)
    df, law = study.df, study.fit.law
    if len(law.variables) >= 2:
        panels = [("n_params", "tokens"), ("tokens", "n_params")]
    else:
        panels = [(law.variables[0], None)]
    fig, axes, owned = _axes(ax, len(panels), (6.2 * len(panels), 4.8))
    for ax, (x, group) in zip(axes, panels):
        xs = _span(df[x])
        inside = (xs >= df[x].min()) & (xs <= df[x].max())
        if group is None:
            yerr = df["loss_se"] if "loss_se" in df else None  # the evaluation's SE
            ax.errorbar(df[x], df["loss"], yerr=yerr, fmt="o", color="C0", capsize=2, label="runs")
            _curve(ax, xs, study.fit.predict(**{x: xs}), inside, "black", _band(study, **{x: xs}))
        else:
            _grouped(ax, study, x, group, xs, inside)
        if "epochs" in df and (df["epochs"] > 1).any():
            repeated = df[df["epochs"] > 1]
            ax.plot(
                repeated[x],
                repeated["loss"],
                "o",
                mfc="none",
                mec="red",
                ms=10,
                label="repeated data (epochs > 1)",
            )
        _log_axes(ax)
        ax.set_xlabel(_label(df, x))
        ax.set_ylabel(_loss_label(df))
        ax.legend(fontsize=8)
    title = (
        f"Loss against {' and '.join(SYMBOL.get(v, v) for v in law.variables)}\nfit: "
        f"{study.fit.describe()}  (dashed: extrapolated; band: 95% bootstrap)"
    )
    return _finish(fig, title, owned, path, formats)


MAX_LEGEND_GROUPS = 6


def _grouped(ax, study, x, group, xs, inside) -> None:
    """Runs against x, one colour per value of ``group`` with its fitted curve; with many
    values (an IsoFLOP design), points coloured on a scale and curves for a few of them."""
    df = study.df
    values = np.array(sorted(df[group].unique()))
    norm = matplotlib.colors.LogNorm(values.min(), values.max() * 1.0001)
    cmap = plt.cm.viridis
    many = len(values) > MAX_LEGEND_GROUPS
    if many:
        sc = ax.scatter(df[x], df["loss"], c=df[group], cmap=cmap, norm=norm, s=18)
        plt.colorbar(sc, ax=ax, label=_label(df, group))
        picks = np.geomspace(values.min(), values.max(), 4)
    else:
        picks = values
    for g in picks:
        color = cmap(norm(g) * 0.85 + 0.05)
        if not many:
            sub = df[df[group] == g]
            ax.errorbar(
                sub[x],
                sub["loss"],
                yerr=sub["loss_se"] if "loss_se" in sub else None,  # the evaluation's SE
                fmt="o",
                color=color,
                capsize=2,
                label=f"{SYMBOL[group]} = {format_si(g)}",
            )
        gv = np.full_like(xs, g)
        label = f"fit at {SYMBOL[group]} = {format_si(g)}" if many else None
        _curve(
            ax,
            xs,
            study.fit.predict(**{x: xs, group: gv}),
            inside,
            color,
            _band(study, **{x: xs, group: gv}),
        )
        if label:
            ax.plot([], [], "-", color=color, label=label)


def loss_vs_compute(study, path=None, formats=FORMATS, ax=None) -> Figure:
    """Loss against compute, one colour per model size, the runs on the envelope ringed, and
    (for L(N, D)) the loss of the compute-optimal model at each budget."""
    study = as_study(study)
    df = study.df
    fig, (ax,), owned = _axes(ax, 1, (7, 4.8))
    sizes = sorted(df["n_params"].unique())
    if len(sizes) > MAX_LEGEND_GROUPS:
        sc = ax.scatter(
            df["compute"],
            df["loss"],
            c=df["n_params"],
            cmap="viridis",
            s=18,
            norm=matplotlib.colors.LogNorm(),
        )
        plt.colorbar(sc, ax=ax, label=_label(df, "n_params"))
    else:
        colors = plt.cm.viridis(np.linspace(0.05, 0.9, len(sizes)))
        for color, n in zip(colors, sizes):
            sub = df[df["n_params"] == n].sort_values("compute")
            ax.plot(
                sub["compute"], sub["loss"], "o-", color=color, lw=0.8, label=f"N = {format_si(n)}"
            )
    a1 = study.result.get("approach_1")
    if a1:
        ax.plot(
            a1["points"]["compute"],
            a1["points"]["loss"],
            "o",
            mfc="none",
            mec="red",
            ms=11,
            label="lower envelope (approach 1)",
        )
    if study.fit.law.name == "chinchilla":
        cs = _span(df["compute"], extend=10)
        opt = chinchilla_optimum(study.fit.params, cs, k=study.result["flops_per_param_token"])[
            "loss"
        ]
        band = None
        if study.samples:
            boot = np.array(
                [
                    chinchilla_optimum(s, cs, k=study.result["flops_per_param_token"])["loss"]
                    for s in study.samples
                ]
            )
            band = (np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0))
        inside = (cs >= df["compute"].min()) & (cs <= df["compute"].max())
        _curve(ax, cs, opt, inside, "black", band)
        ax.plot([], [], "k-", label="compute-optimal L(N*(C), D*(C))")
    _log_axes(ax)
    ax.set_xlabel(_label(df, "compute"))
    ax.set_ylabel(_loss_label(df))
    ax.legend(fontsize=8)
    ax.set_title("Loss against training compute", fontsize=10)
    return _finish(fig, None, owned, path, formats)


def isoflop_curves(study, path=None, formats=FORMATS, ax=None) -> Figure | None:
    """Approach 2: loss against N at each compute budget, its local parabola and optimum;
    the runs of dropped budgets in grey. None when approach 2 did not run."""
    a2 = study.result.get("approach_2")
    if not a2:
        return None
    df = study.df if study.isoflop_points is None else study.isoflop_points
    fig, (ax,), owned = _axes(ax, 1, (7, 4.8))
    colors = plt.cm.plasma(np.linspace(0.05, 0.85, len(a2["minima"])))
    from analysis.isoflop import budget_groups

    groups = budget_groups(df)
    for d in a2.get("dropped", []):
        runs = df[np.isclose(groups, d["compute"])]
        ax.plot(runs["n_params"], runs["loss"], ".", color="0.6")
    for color, m in zip(colors, a2["minima"]):
        runs = df[np.isclose(groups, m["compute"])]
        ax.plot(
            runs["n_params"], runs["loss"], "o", color=color, label=f"C = {format_si(m['compute'])}"
        )
        if "parabola" in m:
            xs = np.geomspace(m["window"][0], m["window"][1], 50)
            c2, c1, c0 = m["parabola"]
            ax.plot(xs, c0 + c1 * np.log(xs) + c2 * np.log(xs) ** 2, "-", color=color, lw=1)
        ax.plot([m["N_opt"]], [m["loss"]], "*", color=color, ms=12, mec="black")
    _log_axes(ax)
    ax.set_xlabel(_label(df, "n_params"))
    ax.set_ylabel(_loss_label(df))
    ax.legend(fontsize=8)
    ax.set_title(
        "IsoFLOP curves (approach 2): local parabola in log N per budget, ★ its optimum",
        fontsize=10,
    )
    return _finish(fig, None, owned, path, formats)


def optimal_allocation(study, path=None, formats=FORMATS, ax=None) -> Figure | None:
    """N*(C) and D*(C) by every approach that applies, with approach 3's bootstrap band
    (``ax``: two axes). None when no approach applies."""
    df, r = study.df, study.result
    have3 = study.fit.law.name == "chinchilla"
    if not (have3 or r.get("approach_1") or r.get("approach_2")):
        return None
    cs = _span(df["compute"], extend=30)
    fig, axes, owned = _axes(ax, 2, (12, 4.8))
    for ax, key, sym, col in (
        (axes[0], "N_opt", "N", "n_params"),
        (axes[1], "D_opt", "D", "tokens"),
    ):
        if have3:
            ex = "a" if sym == "N" else "b"
            point = chinchilla_optimum(
                study.fit.params, cs, k=study.result["flops_per_param_token"]
            )[key]
            band = None
            if study.samples:
                boot = np.array(
                    [
                        chinchilla_optimum(s, cs, k=study.result["flops_per_param_token"])[key]
                        for s in study.samples
                    ]
                )
                band = (np.nanpercentile(boot, 2.5, axis=0), np.nanpercentile(boot, 97.5, axis=0))
            inside = (cs >= df["compute"].min()) & (cs <= df["compute"].max())
            _curve(ax, cs, point, inside, "black", band)
            ax.plot([], [], "k-", label=f"approach 3: {sym}* ∝ C^{r['params'][ex]['value']:.3f}")
        for name, res, color, marker in (
            ("approach 1", r.get("approach_1"), "C3", "o"),
            ("approach 2", r.get("approach_2"), "C0", "*"),
        ):
            if not res:
                continue
            if name == "approach 1":
                px, py = res["points"]["compute"], res["points"][col]
            else:
                px, py = [m["compute"] for m in res["minima"]], [m[key] for m in res["minima"]]
            slope = res["a"] if sym == "N" else res["b"]
            ax.plot(px, py, marker, color=color, ms=8, label=f"{name}: {sym}* ∝ C^{slope:.3f}")
            ax.plot(cs, np.exp(res["intercepts"][sym]) * cs**slope, ":", color=color, lw=1)
        _log_axes(ax, plain_y=False)
        ax.set_xlabel(_label(df, "compute"))
        ax.set_ylabel(f"compute-optimal {'parameters N*' if sym == 'N' else 'tokens D*'}")
        ax.legend(fontsize=8)
    title = "Compute-optimal allocation (band: 95% bootstrap of approach 3)"
    return _finish(fig, title, owned, path, formats)


def residuals(study, path=None, formats=FORMATS, ax=None) -> Figure:
    """log(observed / predicted) against each of the law's variables (``ax``: one axes a
    variable)."""
    study = as_study(study)
    df, law = study.df, study.fit.law
    pred = study.fit.predict(**{v: df[v].to_numpy() for v in law.variables})
    res = np.log(df["loss"].to_numpy() / pred)
    fig, axes, owned = _axes(ax, len(law.variables), (6 * len(law.variables), 4))
    for ax, var in zip(axes, law.variables):
        ax.axhline(0, color="black", lw=0.8)
        ax.plot(df[var], res, "o", color="C0")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: format_si(v)))
        ax.set_xlabel(_label(df, var))
        ax.set_ylabel("log(observed / fitted loss)")
        ax.grid(True, alpha=0.3)
    return _finish(fig, f"Residuals of {study.fit.describe()}", owned, path, formats)


def all_figures(study, out: Path, formats=FORMATS) -> list[Path]:
    """Every figure that applies to this study, written under ``out`` (and closed)."""
    written = []
    for fn, name in (
        (loss_vs_variables, figure_name(study)),
        (loss_vs_compute, "loss_vs_compute"),
        (isoflop_curves, "isoflop"),
        (optimal_allocation, "optimal_allocation"),
        (residuals, "residuals"),
    ):
        fig = fn(study)
        if fig is not None:
            written += save_figure(fig, out / name, formats)
    return written


def figure_name(study) -> str:
    """The file name (no suffix) of the loss-against-variables figure of this law."""
    variables = study.fit.law.variables
    return "loss_vs_n_and_d" if len(variables) == 2 else f"loss_vs_{SYMBOL[variables[0]]}"


def _axes(ax, n: int, figsize) -> tuple[Figure, list, bool]:
    """The figure and ``n`` axes to draw on: new ones (owned), or the axes given."""
    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=figsize, constrained_layout=True, squeeze=False)
        return fig, list(axes[0]), True
    axes = list(np.atleast_1d(ax))
    if len(axes) != n:
        raise ValueError(f"this figure draws {n} panel(s): give ax= {n} matplotlib axes")
    return axes[0].figure, axes, False


def _finish(fig: Figure, title: str | None, owned: bool, path, formats) -> Figure:
    """Title a figure the function made (never one it was handed), save it if asked."""
    if owned and title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        save_figure(fig, path, formats, close=False)
    return fig


def save_figure(fig, path: str | Path, formats=FORMATS, close: bool = True) -> list[Path]:
    """Write ``fig`` as ``path`` in each of ``formats`` (atomically: a temporary file, then
    a rename) and close it unless ``close`` is False; returns the files written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in formats:
        out = path.with_suffix(suffix)
        tmp = out.with_name(f".{out.name}.tmp")
        fig.savefig(tmp, dpi=130, format=suffix[1:])
        os.replace(tmp, out)
        written.append(out)
    if close:
        plt.close(fig)
    return written
