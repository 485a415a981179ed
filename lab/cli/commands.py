"""Entry points: ``lab-train`` (the Hydra app) and ``lab-sweep NAME`` (a sweep file).

    lab-train model=tiny data.tokens=500000           one run
    lab-train -m model=nano,micro data.tokens=1e5,2e5  a multirun over the grid
    lab-sweep demo [overrides]                         = lab-train -m +sweeps=demo [overrides]

The Hydra layer stops here: the composed config becomes ``lab.config.schema.Config`` and goes to
``lab.training.run.train``. In a multirun each run is kept apart: a run that fails is recorded
as failed and the others go on; a run whose record says ok for the same config is kept,
not retrained. When a multirun ends, the sweep's table (``runs.csv``) is written and
printed.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lab.config.composition import normalize_overrides
from lab.config.record import RECORD_NAME, SWEEP_TABLE, format_si
from lab.config.schema import (
    CONF_DIR,
    SWEEPS_DIR,
    Config,
    config_hash,
    from_dict,
    register_configs,
    to_dict,
)
from lab.runs.claim import claim
from lab.runs.files import write_csv_atomic, write_json_atomic
from lab.runs.records import read_record

log = logging.getLogger("lab")

register_configs()


# what a full, read-only or forbidden disk raises: one line and a failed record, not a traceback
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM)


PR_SET_PDEATHSIG = 1  # prctl(2)


def end_with_parent() -> bool:
    """Ask Linux to send this process SIGTERM when its parent dies (prctl(2),
    PR_SET_PDEATHSIG), so a joblib sweep's workers do not train on, orphaned, after its
    main process is killed: the run checkpoints and stops as on any SIGTERM. Whether it
    was set (Linux only; elsewhere nothing changes)."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and os.getppid() == 1:  # the parent died before the request: act now
        os.kill(os.getpid(), signal.SIGTERM)
    return ok


def hand_over(signum: int) -> None:
    """After a run has checkpointed on ``signum``, call the handler that was installed before
    the lab's (the run's own is gone by then): under submitit, its USR2 handler, which
    requeues the job (Slurm's ``--signal=USR2@...``) so the requeued job resumes from the
    checkpoint. Ctrl-C and the default handlers are left alone."""
    import signal

    previous = signal.getsignal(signum)
    if signum == signal.SIGINT or not callable(previous):
        return
    log.info("handing %s over to the launcher's handler", signal.Signals(signum).name)
    previous(signum, None)


def run_job(cfg: Config, out_dir: Path, multirun: bool) -> dict | None:
    """Train one configured run in ``out_dir``, holding the folder's claim (``lab.runs.claim``);
    in a multirun, never raise: a run another process holds is left to it, a run that fails
    is recorded as failed, and the sweep goes on."""
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 claims for the job
        return _run_job(cfg, out_dir, multirun)
    held = claim(out_dir)
    try:
        mine = held.acquire()
    except OSError as e:  # the run folder cannot even be made (a full or read-only disk)
        if not multirun:
            print(f"lab-train: error: {out_dir}: {e.strerror or e}", file=sys.stderr)
            sys.exit(1)
        log.error("run not started: %s: %s", out_dir, e.strerror or e)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "config": to_dict(cfg)}
    try:
        if not mine:
            message = f"another process is training {out_dir}; left to it"
            if not multirun:
                print(f"lab-train: error: {message}", file=sys.stderr)
                sys.exit(2)
            log.warning(message)
            return read_record(out_dir)
        return _run_job(cfg, out_dir, multirun)
    finally:
        held.release()


def _run_job(cfg: Config, out_dir: Path, multirun: bool) -> dict | None:
    from lab.config.counting import below_one_context
    from lab.training.run import train  # torch loads here, not for --help
    from lab.training.signals import Interrupted

    too_small = below_one_context(cfg)
    if multirun and too_small:
        log.warning("skipped: %s", too_small)
        record = {
            "status": "skipped",
            "error": too_small,
            "config": to_dict(cfg),
            "config_hash": config_hash(cfg),
            "budget": cfg.data.budget,
        }
        write_json_atomic(out_dir / RECORD_NAME, record)
        return record
    if multirun and cfg.train.skip_done:
        done = read_record(out_dir)
        if done and done.get("status") == "ok" and done.get("config_hash") == config_hash(cfg):
            log.info("already done (same config, status ok): %s", out_dir)
            return done
    try:
        record = train(cfg, out_dir, tracker_group=out_dir.parent.name if multirun else None)
    except Interrupted as e:  # checkpointed and recorded: the sweep stops with this run
        print(f"lab-train: {e}", file=sys.stderr)
        if multirun:
            table = write_sweep_table(out_dir.parent)
            if table is not None:
                print(summarize(table, out_dir.parent))
        hand_over(e.signum)  # submitit: requeue; the requeued job resumes from here
        sys.exit(e.exit_code)
    except (ValueError, FileNotFoundError) as e:
        if not multirun:
            print(f"lab-train: error: {e}", file=sys.stderr)
            sys.exit(2)
        log.error("run failed before training: %s", e)
        return _record_failure(cfg, out_dir, e)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            if not multirun:
                raise
            log.exception("run failed")
            return _record_failure(cfg, out_dir, e)
        message = f"{out_dir}: {os.strerror(e.errno)} writing {e.filename or 'a file'}"
        if not multirun:
            print(f"lab-train: error: {message}; the run is recorded as failed", file=sys.stderr)
            sys.exit(1)
        log.error("run failed: %s", message)
        return _record_failure(cfg, out_dir, e)
    except Exception as e:
        if not multirun:
            raise
        log.exception("run failed")
        return _record_failure(cfg, out_dir, e)
    if os.environ.get("RANK", "0") != "0":
        return record  # one line per run: rank 0's, whose record this is
    log.info(
        "%s: val loss %.4f, train loss %.4f, %.1fs; record: %s",
        record["status"],
        record["val_loss"],
        record["train_loss"],
        record["wall_time_s"],
        out_dir / RECORD_NAME,
    )
    return record


def _record_failure(cfg: Config, out_dir: Path, error: Exception) -> dict:
    """The run's record, marked failed with ``error`` (unless it already says how it ended);
    if even that cannot be written (a full disk), the record returned says so."""
    record = read_record(out_dir)
    if record is None or record.get("status") == "running":
        record = {
            **(record or {"config": to_dict(cfg), "config_hash": config_hash(cfg)}),
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
        }
        try:
            write_json_atomic(out_dir / RECORD_NAME, record)
        except OSError as e:
            log.error("could not write the failed record of %s: %s", out_dir, e.strerror or e)
    return record


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_app(dcfg: DictConfig) -> float:
    """One run. Returns its final validation loss (NaN when it did not finish), the value
    Hydra's optimising sweepers (Optuna, Ax, Nevergrad) minimise."""
    hc = HydraConfig.get()
    cfg = from_dict(OmegaConf.to_container(dcfg, resolve=True))
    if "joblib" in str(OmegaConf.select(hc, "launcher._target_", default="")):
        end_with_parent()
        cfg = share_cores(cfg, OmegaConf.select(hc, "launcher.n_jobs", default=-1))
    record = run_job(cfg, Path(hc.runtime.output_dir), multirun=hc.mode == RunMode.MULTIRUN)
    loss = (record or {}).get("val_loss")
    ok = (record or {}).get("status") == "ok" and isinstance(loss, int | float)
    return float(loss) if ok else float("nan")


def share_cores(cfg: Config, n_jobs) -> Config:
    """A joblib worker's config with ``train.threads`` set to its share of the cores
    (cores // n_jobs) when the config leaves threads to torch: n_jobs runs with every core's
    threads each slow one another by ten times or more. An explicit train.threads stays."""
    from dataclasses import replace

    from lab.cli.plan import joblib_workers

    if cfg.train.threads:
        return cfg
    threads = max(1, (os.cpu_count() or 1) // joblib_workers(n_jobs))
    return replace(cfg, train=replace(cfg.train, threads=threads))


def train_main() -> None:
    """``lab-train``: the Hydra app (single run or ``-m`` multirun)."""
    sys.argv = [sys.argv[0], *normalize_overrides(sys.argv[1:])]
    _hydra_app()


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_main(argv: list[str] | None = None) -> None:
    """``lab-sweep NAME [--plan [--device D] [--gpus K]] [overrides]``: run sweeps/NAME.yaml
    as a Hydra multirun, or with ``--plan`` print its runs (N, D, D/N, steps, C, memory,
    estimated time; GPU-hours for a GPU) and launch nothing."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: lab-sweep NAME [--plan [--device h200|h100|a100|cpu] [--gpus K] [--reprobe]] "
            "[hydra overrides...]"
        )
        print(f"sweeps: {', '.join(available_sweeps())}")
        sys.exit(0 if args else 2)
    name, rest = args[0], args[1:]
    try:
        options, overrides = _plan_options(rest)
    except ValueError as e:
        print(f"lab-sweep: error: {e}", file=sys.stderr)
        sys.exit(2)
    if name not in available_sweeps():
        print(
            f"lab-sweep: error: unknown sweep {name!r}; available: {', '.join(available_sweeps())}",
            file=sys.stderr,
        )
        sys.exit(2)
    if options["plan"]:
        from lab.cli.plan import format_plan, plan

        try:
            rows = plan(
                name,
                overrides,
                device=options["device"],
                gpus=options["gpus"],
                fresh=options["reprobe"],
            )
            print(format_plan(name, rows))
        except (ValueError, FileNotFoundError, HydraException) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"lab-sweep: error: {first}", file=sys.stderr)
            sys.exit(2)
        return
    if options["device"] or options["gpus"] != 1 or options["reprobe"]:
        print("lab-sweep: error: --device, --gpus and --reprobe go with --plan", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], "--multirun", f"+sweeps={name}", *normalize_overrides(overrides)]
    _hydra_app()


def _plan_options(args: list[str]) -> tuple[dict, list[str]]:
    """``--plan``, ``--device D`` and ``--gpus K`` (or ``--device=D``) out of a sweep's
    arguments; the rest are Hydra overrides."""
    options = {"plan": False, "device": None, "gpus": 1, "reprobe": False}
    rest, i = [], 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if arg == "--plan":
            options["plan"] = True
        elif arg == "--reprobe":
            options["reprobe"] = True
        elif key in ("--device", "--gpus"):
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{key} needs a value")
                i += 1
                value = args[i]
            if key == "--gpus":
                try:
                    options["gpus"] = int(value)
                except ValueError:
                    raise ValueError(f"--gpus must be a whole number, got {value!r}") from None
            else:
                options["device"] = value.lower()
        else:
            rest.append(arg)
        i += 1
    return options, rest


class SweepTable(Callback):
    """At the end of a multirun: write the sweep-level table and print a summary."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_sweep_table(sweep_dir)
        if table is not None:
            print(summarize(table, sweep_dir))


def write_sweep_table(sweep_dir: Path):
    """Write ``runs.csv`` and ``runs.parquet`` (every record under ``sweep_dir``, one row a
    run, by N and D) and return the table; None when there is no record. A table that
    cannot be written is logged, and the sweep's records stay the source."""
    from lab.runs.records import read_records

    table = read_records(sweep_dir)
    if table.empty:
        return None
    table = table.sort_values(["n_params_non_embedding", "tokens", "run"], na_position="last")
    for path in (sweep_dir / SWEEP_TABLE, (sweep_dir / SWEEP_TABLE).with_suffix(".parquet")):
        try:
            write_csv_atomic(path, table)
        except OSError as e:
            log.error("could not write %s: %s", path, e.strerror or e)
    return table


def summarize(table, sweep_dir: Path) -> str:
    """The sweep's runs, one line each: N, D, C, validation loss, time, status, name."""

    def num(v, fmt=format_si):
        return "-" if v is None or v != v else fmt(v)

    lines = [
        f"\nsweep {sweep_dir}: {len(table)} runs",
        f"{'N':>8} {'D':>8} {'C':>8} {'val loss':>9} {'time':>6}  {'status':<8} run",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"{num(r['n_params_non_embedding']):>8} {num(r['tokens']):>8} "
            f"{num(r['flops_6N_attn']):>8} "
            f"{num(r['val_loss'], '{:.4f}'.format):>9} "
            f"{num(r['wall_time_s'], '{:.0f}s'.format):>6}  "
            f"{str(r['status']):<8} {r['run']}"
        )
    failed = table[table["status"] != "ok"]
    if len(failed):
        lines.append(f"{len(failed)} run(s) not ok; their result.json holds the error")
    lines.append(
        f"N: non-embedding parameters; C = 6ND + attention FLOPs; table: {sweep_dir / SWEEP_TABLE}"
    )
    return "\n".join(lines)
