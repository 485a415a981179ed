"""Scaling-law analysis of training runs: read the lab's runs or a published table, fit the
laws of Kaplan et al. (2020), Hoffmann et al. (2022) and later papers with bootstrap
intervals, find the compute-optimal allocation, draw it. Never imports torch. In a notebook::

    import analysis
    df = analysis.load_runs("runs/demo")        # a sweep folder, its runs.csv, or any table
    fit = analysis.fit(df, "chinchilla")        # Huber fit + 1000 bootstrap refits
    fit.params, fit.intervals(0.95)             # parameters, their 95% intervals
    fit.predict(1e6, 1e8)                       # L(N=1e6, D=1e8); arrays work too
    fit.predict_interval(1e6, 1e8)              # Prediction(predicted, low, high)
    clean = analysis.load_runs(path, where="epochs <= 2.5", drop_highest=5)  # recorded
    analysis.fit(clean, "data_constrained_full", fixed={"E": 1.87})  # hold parameters
    analysis.isoflop(df, method="porian")       # approach 2 by a named method
    study = analysis.analyze(df)                # all of fit.json: approaches, backtests
    analysis.loss_vs_compute(study, ax=ax)      # any figure, on your axes; path= saves
"""

from analysis.fitting import Fit, Prediction, fit
from analysis.isoflop import ISOFLOP_METHODS, isoflop
from analysis.laws import LAWS
from analysis.load import load_runs
from analysis.plot import (
    all_figures,
    isoflop_curves,
    loss_vs_compute,
    loss_vs_variables,
    optimal_allocation,
    residuals,
    save_figure,
)
from analysis.study import Study, analyze

__all__ = [
    "ISOFLOP_METHODS",
    "LAWS",
    "Fit",
    "Prediction",
    "Study",
    "all_figures",
    "analyze",
    "fit",
    "isoflop",
    "isoflop_curves",
    "load_runs",
    "loss_vs_compute",
    "loss_vs_variables",
    "optimal_allocation",
    "residuals",
    "save_figure",
]
