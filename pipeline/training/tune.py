"""`tune`: a hyperparameter search on Optuna, on one machine or many, over a recipe's `[tune]` space.

Each trial trains a real model with our trainer (`train.train`, the explicit kernels) on the inner
training rows and is judged by its loss on the inner validation rows (`spec.data.inner_dataset`: 20%
of the training rows, stratified, the recipe's split seed). The gate's validation rows, which decide
publication, are never read by the search. The inner validation loss is reported every `log_every`
steps so that Optuna's median pruner can stop hopeless trials; a diverged trial is a failed trial with
its reason, never a crash of the study.

Several processes share one study through one storage (the embedded journal file, or any database URL
Optuna takes). What keeps them honest:
- `--trials N` is the study's total of *counted* trials: complete, pruned, or failed for a reason of
  their own (diverged). Interrupted trials, trials of a process that died (abandoned) and surplus
  trials (asked for by two processes at once when only one was left to run) are recorded as failed
  with that reason and not counted, so a rerun tops the study up to N.
- Each process seeds its TPE sampler from `--seed` and its number among the study's processes (an
  atomic claim), and TPE's constant liar counts running trials as bad, so processes do not propose the
  same trial, and a fresh single-process search with the same --seed proposes the same trials.
- The recipe's own values are enqueued as the first trial, once, by the process that creates the study.
- A study records the recipe, the space and the data's sha256; another recipe or space is refused.

Nothing here imports optuna or torch at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependency, PipelineError, Terminated, TrainingFailed, UsageError
from ..spec.archs import arch_for
from ..spec.recipe import ModelSpec, Recipe
from ..spec.tune_space import DEFAULT, TuneSpace, record_difference

if TYPE_CHECKING:  # pragma: no cover
    from ..spec.data import Dataset

MAX_TRIALS = 100_000
JOURNAL = "journal.log"
PLOTS = ("history.png", "importances.png")
RESULTS = "tune.json"
EXPORT_TRIES = 3  # --export-best tries the best trials in turn when one diverges or misses the gate
BEST = "best.toml"
STUDY_ATTR = "xorship"
ABANDONED_AFTER_S = 300.0  # a running trial of another node whose heartbeat has not moved this long is abandoned
BEAT_EVERY_S = 30.0  # how often a running trial's heartbeat counter goes up
PRUNER_STARTUP_TRIALS = 5  # the median pruner compares a trial with at least this many others
PRUNER_WARMUP_STEPS = 100  # and never prunes before this step
REPORTS = 20  # a trial reports its inner validation loss about this many times
NOT_COUNTED = ("interrupted", "abandoned", "surplus", "error")  # failure reasons not counted toward --trials
OBJECTIVE = "inner validation loss"
SEARCHED = {"model": ("hidden", "activation"), "train": ("optimizer", "lr", "steps", "batch_size")}

TrialFn = Callable[["TrialRecord", int, int, "TrialRecord | None"], None]  # (trial, counted, of, best so far)
NoticeFn = Callable[[str], None]


class StudyMismatch(UsageError):
    """The study was made with another recipe, space or data (exit 2)."""


@dataclass(frozen=True)
class StorageChoice:
    """Where a study lives: `url` as Optuna takes it (or the journal file's path), `shown` without a
    password."""

    url: str
    shown: str
    journal: Path | None = None  # the embedded journal file


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the table, the JSON file and the progress line show it."""

    number: int
    state: str  # complete | pruned | failed | running | waiting
    value: float | None  # the inner validation loss (complete trials)
    params: dict[str, Any]  # hidden, activation, lr, batch_size, optimizer, steps
    metric: float | None = None  # accuracy or RMSE on the inner validation rows
    reason: str | None = None  # a failed trial's reason
    seconds: float | None = None
    step: int | None = None  # the last reported step (pruned trials: where it stopped)
    host: str | None = None
    pid: int | None = None
    start: bool = False  # the recipe's own values (enqueued)

    @property
    def counted(self) -> bool:
        if self.state in ("complete", "pruned"):
            return True
        return self.state == "failed" and self.reason is not None and self.reason.split(":")[0] not in NOT_COUNTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "counted": self.counted,
            "value": _json_float(self.value),
            "params": self.params,
            "metric": _json_float(self.metric),
            "reason": self.reason,
            "seconds": self.seconds,
            "step": self.step,
            "host": self.host,
            "pid": self.pid,
            "start": self.start,
        }


@dataclass(frozen=True)
class StudyResult:
    study: str
    storage: StorageChoice
    space: TuneSpace
    trials: tuple[TrialRecord, ...]  # every trial of the study (all processes), by number
    ran_here: tuple[int, ...]  # the trial numbers this process ran
    target: int  # --trials
    sampler_seed: int
    metric_name: str  # accuracy | rmse
    inner_rows: tuple[int, int]  # (inner training rows, inner validation rows)
    created: bool  # this process created the study
    stopped_by: str  # "trials" | "timeout" | "others" (the rest ran or are running elsewhere)
    process_index: int = 1  # this process's number among those that joined the study
    gate_unseen: bool = True  # the gate reads validation rows the search never sees (validation_fraction > 0)
    seconds: float = 0.0  # this process's search: from the study opened to its last trial told
    notices: tuple[str, ...] = ()
    study_ref: Any = field(default=None, repr=False, compare=False)  # the optuna.Study (plots)

    @property
    def counted(self) -> int:
        return sum(t.counted for t in self.trials)

    @property
    def best(self) -> TrialRecord | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
        return min(done, key=lambda t: (t.value, t.number)) if done else None

    def ranked(self, n: int = 10) -> list[TrialRecord]:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return sorted(done, key=lambda t: (t.value, t.number))[:n]

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            key = t.state if t.state != "failed" else f"failed ({(t.reason or 'unknown').split(':')[0]})"
            out[key] = out.get(key, 0) + 1
        return out


# ---------------------------------------------------------------------------------------------
# Storage


def storage_choice(url: str | None, folder: Path) -> StorageChoice:
    """The embedded journal file in `folder` (url None), or a database URL as given."""
    if url is None:
        path = folder / JOURNAL
        return StorageChoice(str(path), str(path), journal=path)
    if not url.strip() or "://" not in url:
        raise UsageError(
            f"--storage {url!r} is not a database URL (for example sqlite:///tune.db or "
            "postgresql://user:password@host/db); leave it out for the embedded journal file"
        )
    shown = masked(url)
    scheme, _, rest = url.partition("://")
    if scheme.split("+")[0].lower() == "sqlite" and rest.split("?")[0] in ("", "/", "/:memory:"):
        raise UsageError(
            f"--storage {shown}: an in-memory SQLite database is neither shared nor resumable; name a file "
            "(sqlite:///tune.db), or leave --storage out for the embedded journal file"
        )
    return StorageChoice(url, shown)


def masked(url: str) -> str:
    """The URL with its password (in the user part or the query) shown as ***."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        query = {k: ("***" if "pass" in k.lower() else v) for k, v in u.query.items()}
        return u.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:  # not a URL sqlalchemy reads (or no sqlalchemy): everything between :// and the last @
        scheme, sep, rest = url.partition("://")
        if "@" in rest:
            auth, _, host = rest.rpartition("@")
            return f"{scheme}{sep}{auth.split(':', 1)[0]}:***@{host}"
        return url.split("?", 1)[0] + ("?***" if "?" in url else "")


def _scrub(text: str, url: str) -> str:
    """A driver's message with the URL's password taken out (drivers seldom echo it; never shown)."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        secrets = [u.password] + [v for k, v in u.query.items() if "pass" in k.lower()]
    except Exception:
        secrets = []
    for secret in secrets:
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "***")
    return text


def open_storage(choice: StorageChoice, on_notice: NoticeFn | None = None) -> Any:
    """The Optuna storage; one line before Optuna creates its tables in a database; an unreachable,
    unusable or damaged storage is a one-line UsageError."""
    from ..store import artifacts as A

    optuna = _optuna()
    if choice.journal is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        A.ensure_folder(choice.journal.parent)  # a folder that cannot be made: one line, exit 11
        path = str(choice.journal)
        try:
            return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except OSError as exc:
            raise UsageError(f"cannot open the study's journal {path}: {exc.strerror or exc}") from None
        except Exception as exc:  # a line that is not a journal entry: a damaged file
            raise UsageError(
                f"the study's journal {path} is damaged ({_first_line(exc)}); move it away to start the study again"
            ) from None
    try:
        import sqlalchemy
    except ModuleNotFoundError:
        raise MissingDependency("--storage with a database URL needs sqlalchemy: pip install -e '.[tune]'") from None
    try:
        engine = sqlalchemy.create_engine(choice.url)
        with engine.connect():
            pass
        fresh = not sqlalchemy.inspect(engine).has_table("studies")
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise MissingDependency(
            f"--storage {choice.shown} needs the database driver {exc.name!r}: pip install -e '.[tune]'"
        ) from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, no server, refused, no such database
        raise UsageError(f"cannot reach --storage {choice.shown}: {_scrub(_first_line(exc), choice.url)}") from None
    if fresh and on_notice is not None:
        on_notice(f"creating Optuna's tables in {choice.shown} (its first study)")
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(choice.url)
        except Exception as exc:  # two processes creating the tables at once: the loser finds them made
            if attempt == 3:
                raise UsageError(
                    f"cannot use --storage {choice.shown}: {_scrub(_first_line(exc), choice.url)}"
                ) from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# The study: created once, checked on every resume


def study_record(recipe: Recipe, space: TuneSpace, sha256: str | None, inner: tuple[int, int]) -> dict[str, Any]:
    """What a study records about what it searches (compared on resume)."""
    d = recipe.as_dict()
    for section, keys in SEARCHED.items():
        for k in keys:
            d[section].pop(k, None)
    d["data"].pop("path", None)  # machines see the file at different paths; its sha256 says if it is the same
    for k in ("name", "serving_name", "gate"):  # they decide where and whether the best is published, not a trial
        d.pop(k, None)
    return {"recipe": d, "space": space.record(), "data_sha256": sha256, "objective": OBJECTIVE, "inner_rows": inner}


def check_record(recorded: Mapping[str, Any], mine: Mapping[str, Any], study: str) -> None:
    """Refuse a study made with another recipe, space or data, naming the first difference."""
    tip = f"; give a new --study NAME to start another study (this one is {study!r})"
    if recorded.get("objective") != mine["objective"]:
        raise StudyMismatch(f"study {study!r} was not made by this version of tune{tip}")
    theirs, ours = recorded.get("recipe", {}), mine["recipe"]
    for section in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(section), ours.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    raise StudyMismatch(
                        f"study {study!r} was made with another recipe: [{section}] {k} is {_show(b.get(k))} here, "
                        f"{_show(a.get(k))} in the study{tip}"
                    )
        elif a != b:
            raise StudyMismatch(
                f"study {study!r} was made with another recipe: {section} is {_show(b)} here, {_show(a)} in the study{tip}"
            )
    diff = record_difference(mine["space"], recorded.get("space", {}))
    if diff:
        raise StudyMismatch(f"study {study!r} was made with another search space: {diff}{tip}")
    if recorded.get("data_sha256") != mine["data_sha256"]:
        raise StudyMismatch(
            f"study {study!r} was made on other data: the data file changed since (sha256 differs){tip}"
        )


def open_study(storage: Any, name: str, record: dict[str, Any], sampler: Any, pruner: Any) -> tuple[Any, bool]:
    """(the study, whether this process created it). The creator writes the record; a process that
    finds the study waits briefly for the record (a creator a moment ahead) and checks it."""
    optuna = _optuna()
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="minimize"
        )
        study.set_user_attr(STUDY_ATTR, record)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise StudyMismatch(f"study {name!r} maximizes; tune's studies minimize the {OBJECTIVE}")
    deadline = time.monotonic() + 10.0
    recorded = study.user_attrs.get(STUDY_ATTR)
    while recorded is None and time.monotonic() < deadline:
        time.sleep(0.1)
        recorded = optuna.load_study(study_name=name, storage=storage).user_attrs.get(STUDY_ATTR)
    if recorded is None:
        raise StudyMismatch(f"study {name!r} was not made by tune (it records no recipe); give another --study NAME")
    check_record(recorded, record, name)
    return study, False


# ---------------------------------------------------------------------------------------------
# Trials


def suggest(trial: Any, space: TuneSpace) -> dict[str, Any]:
    """A trial's values from the space (fixed keys are not suggested: they are the same in every trial)."""
    layers = _int(trial, "layers", space.layers)
    if space.per_layer_width:
        hidden = tuple(_int(trial, f"width_{i + 1}", space.width) for i in range(layers))
    else:
        hidden = (_int(trial, "width", space.width),) * layers
    return {
        "hidden": list(hidden),
        "activation": _pick(trial, "activation", space.activation),
        "lr": space.lr.low if space.lr.fixed else trial.suggest_float("lr", space.lr.low, space.lr.high, log=True),
        "batch_size": _pick(trial, "batch_size", space.batch_size),
        "optimizer": _pick(trial, "optimizer", space.optimizer),
        "steps": _int(trial, "steps", space.steps),
    }


def _int(trial: Any, name: str, r: Any) -> int:
    if r.fixed:
        return int(r.low)
    return int(trial.suggest_int(name, int(r.low), int(r.high), log=r.log))


def _pick(trial: Any, name: str, choices: Sequence[Any]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def start_values(recipe: Recipe, space: TuneSpace) -> dict[str, Any] | None:
    """The recipe's own values as Optuna parameters (the first trial, so the search starts from what
    `init` wrote), or None when they lie outside the space."""
    m, t = recipe.model, recipe.train
    values = {"hidden": list(m.hidden), "activation": m.activation, "lr": t.lr, "batch_size": t.batch_size,
              "optimizer": t.optimizer, "steps": t.steps}  # fmt: skip
    if not m.hidden or space.contains(values) is not None:
        return None
    params: dict[str, Any] = {}
    if not space.layers.fixed:
        params["layers"] = len(m.hidden)
    if space.per_layer_width:
        if not space.width.fixed:
            params.update({f"width_{i + 1}": w for i, w in enumerate(m.hidden)})
    elif not space.width.fixed:
        params["width"] = m.hidden[0]
    for key in ("activation", "batch_size", "optimizer"):
        if len(getattr(space, key)) > 1:
            params[key] = values[key]
    for key in ("lr", "steps"):
        if not getattr(space, key).fixed:
            params[key] = values[key]
    return params


def recipe_with(recipe: Recipe, params: Mapping[str, Any]) -> Recipe:
    """The recipe with a trial's values."""
    model = ModelSpec(tuple(params["hidden"]), params["activation"])
    train = replace(
        recipe.train,
        optimizer=params["optimizer"],
        lr=float(params["lr"]),
        steps=int(params["steps"]),
        batch_size=int(params["batch_size"]),
    )
    return replace(recipe, model=model, train=train)


class _Pruned(Exception):
    """Raised from a trial's watch when the pruner says stop."""

    def __init__(self, step: int) -> None:
        self.step = step


def _inner_validation(data: Dataset, task: str, scale_output: bool) -> tuple[Any, Any]:
    """x and y of the inner validation rows as the training loss takes them."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data.x_val, dtype=np.float32))
    y_np = data.y_val
    if task == "multiclass":
        y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.int64))
    elif task == "binary":
        y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float32).reshape(-1, 1))
    else:
        v = np.asarray(y_np, dtype=np.float64)
        if scale_output:
            assert data.target_mean is not None and data.target_std is not None
            v = (v - data.target_mean) / data.target_std
        y = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(-1, 1))
    return x, y


def _loss_on(model: Any, arch: Any, x: Any, y: Any) -> float:
    import torch

    from .kernels import criterion
    from .model import training_view

    dev = next(model.parameters()).device
    with torch.no_grad():
        out = training_view(model, arch)(x.to(dev))
        if arch.task == "binary":
            out = out.clamp(0.0, 1.0)
        return float(criterion(arch.task)(out, y.to(dev)))


def run_trial(
    trial: Any, recipe: Recipe, space: TuneSpace, data: Dataset, device: str, val: tuple[Any, Any]
) -> dict[str, Any]:
    """Train one trial and return its user attributes (value under "value"); raises _Pruned,
    TrainingFailed (diverged) or a stop."""
    from ..spec.recipe import Gate
    from .train import TrainConfig, train
    from .validate import evaluate

    params = suggest(trial, space)
    trial.set_user_attr("params", params)
    trial_recipe = recipe_with(recipe, params)
    arch = arch_for(trial_recipe, data.features, data.classes, data.task, data.encoding)
    steps = params["steps"]
    every = max(1, steps // REPORTS)
    config = TrainConfig(
        arch=arch, steps=steps, lr=params["lr"], seed=recipe.train.seed, device=device, trainer="auto",
        log_every=every, optimizer=params["optimizer"], batch_size=params["batch_size"],
    )  # fmt: skip
    x_val, y_val = val

    def watch(step: int, _loss: float, model: Any) -> None:
        if step == 0:
            return
        value = _loss_on(model, arch, x_val, y_val)
        if not math.isfinite(value):
            raise TrainingFailed(f"diverged: the {OBJECTIVE} is {value} at step {step}")
        trial.report(value, step)
        if space.prune and trial.should_prune():
            raise _Pruned(step)

    start = time.perf_counter()
    result = train(config, None, data, watch=watch)
    value = _loss_on(result.model, arch, x_val, y_val)
    if not math.isfinite(value):
        raise TrainingFailed(f"diverged: the {OBJECTIVE} is {value} after {steps} steps")
    gate = Gate(max_rmse=1.0) if data.task == "regression" else Gate(min_accuracy=0.0)
    checked = evaluate(result.model, arch, result.final_loss, gate, data)
    metric = checked.rmse if data.task == "regression" else checked.accuracy
    return {
        "value": value,
        "metric": metric,
        "train_loss": result.final_loss,
        "seconds": round(time.perf_counter() - start, 3),
        "trainer": result.trainer,
        "step": steps,
    }


# ---------------------------------------------------------------------------------------------
# The loop


def sampler_seed(seed: int, index: int) -> int:
    """The sampler seed of the study's `index`-th process (1, 2, ...): --seed mixed with the index, so
    processes sharing a study do not propose the same trials, and a fresh single-process search with
    the same --seed proposes the same ones."""
    text = f"{seed}/{index}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


def process_index(study: Any) -> int:
    """This process's number among those that joined the study (1 for the first), taken by an atomic
    claim in the study's storage, so no two processes get the same one."""
    prefix = f"{study.study_name}.xorship.process-"
    taken = [
        int(s.study_name[len(prefix) :])
        for s in study._storage.get_all_studies()
        if s.study_name.startswith(prefix) and s.study_name[len(prefix) :].isdigit()
    ]
    index = max(taken, default=0) + 1
    while not _claim(study, f"process-{index}"):
        index += 1
    return index


def _tpe(seed: int) -> Any:
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def run_study(
    recipe: Recipe,
    data: Dataset,
    *,
    storage: StorageChoice,
    study_name: str,
    trials: int,
    timeout: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    on_trial: TrialFn | None = None,
    on_notice: NoticeFn | None = None,
) -> StudyResult:
    """Run trials until the study has `trials` counted trials (this process's and the others'), or
    `timeout` seconds have passed (the running trial finishes). A stop (Ctrl-C, SIGTERM) marks the
    running trial failed ("interrupted") and is raised again."""
    optuna = _optuna()
    check_trials(trials, timeout)
    space = recipe.tune or DEFAULT
    notices: list[str] = []

    def note(msg: str) -> None:
        notices.append(msg)
        if on_notice is not None:
            on_notice(msg)

    store = open_storage(storage, note)
    inner = (len(data.train_rows), len(data.val_rows))
    record = study_record(recipe, space, data.sha256, inner)
    sampler = _tpe(seed)  # replaced once this process has its index in the study
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_STEPS)
        if space.prune
        else optuna.pruners.NopPruner()
    )
    try:
        study, created = open_study(store, study_name, record, sampler, pruner)
    except PipelineError:
        raise
    except Exception as exc:  # the database refused (permissions, a broken schema)
        raise UsageError(f"cannot open study {study_name!r} in {storage.shown}: {_first_line(exc)}") from None
    try:
        index = process_index(study)
    except storage_errors() as exc:
        raise storage_failed(exc, storage) from None
    seed_here = sampler_seed(seed, index)
    study.sampler = _tpe(seed_here)
    start = start_values(recipe, space)
    if start is None and created:
        note("the recipe's own values lie outside the [tune] space; the search starts from sampled trials")
    if space.per_layer_width and not space.layers.fixed:
        note(
            "per-layer widths are conditional (width_2 exists only in trials with 2 layers or more): parameter "
            "importances compare the parameters every trial has, so they leave those widths out"
        )
    metric_name = "rmse" if data.task == "regression" else "accuracy"
    val = _inner_validation(data, data.task, recipe.data.standardize and data.task == "regression")
    began = time.monotonic()
    ran: list[int] = []
    stopped_by = "trials"
    me = identity()
    watcher = Watcher(me)
    try:
        if start is not None:
            _enqueue_start(study, start)
        while True:
            watcher.sweep(study)
            now = _records(study)
            counted = sum(t.counted for t in now)
            running = sum(t.state == "running" for t in now)
            if counted >= trials:
                stopped_by = "trials"
                break
            if counted + running >= trials:
                stopped_by = "others"
                break
            if timeout is not None and time.monotonic() - began >= timeout:
                stopped_by = "timeout"
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask()
            for k, v in me.items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("beat", 0)
            ahead = [t for t in _records(study) if t.number < trial.number and (t.counted or t.state == "running")]
            if len(ahead) >= trials:  # another process asked for the last one at the same moment
                trial.set_user_attr("reason", "surplus: the study had its trials when this one was asked for")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                stopped_by = "others"
                break
            ran.append(trial.number)
            lost = _one(study, trial, recipe, space, data, device, val)
            if lost is not None:
                note(lost)
            if on_trial is not None:
                records = _records(study)
                mine = next(t for t in records if t.number == trial.number)
                done = [t for t in records if t.state == "complete" and t.value is not None]
                best = min(done, key=lambda t: (t.value, t.number)) if done else None
                on_trial(mine, sum(t.counted for t in records), trials, best)
        records = _records(study)
    except storage_errors() as exc:
        raise storage_failed(exc, storage) from None
    return StudyResult(
        study=study_name, storage=storage, space=space, trials=tuple(records), ran_here=tuple(ran),
        target=trials, sampler_seed=seed_here, process_index=index, metric_name=metric_name, inner_rows=inner, created=created,
        stopped_by=stopped_by, seconds=time.monotonic() - began, notices=tuple(notices), study_ref=study,
        gate_unseen=recipe.data.validation_fraction > 0,
    )  # fmt: skip


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage raises when it fails under a running search (a dropped connection, a read-only
    file): Optuna's own wrapper, SQLAlchemy's errors, the journal file's OSError."""
    optuna = _optuna()
    kinds: list[type[BaseException]] = [optuna.exceptions.StorageInternalError, OSError]
    try:
        import sqlalchemy.exc

        kinds.append(sqlalchemy.exc.SQLAlchemyError)
    except ModuleNotFoundError:
        pass
    return tuple(kinds)


def storage_failed(exc: BaseException, storage: StorageChoice) -> UsageError:
    """The one line for a storage that failed mid-search, naming the cause Optuna wraps."""
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return UsageError(
        f"the study's storage {storage.shown} failed: {_scrub(_first_line(cause), storage.url)}; the study resumes "
        "when it is usable again (run the same command)"
    )


def _claim(study: Any, what: str) -> bool:
    """An atomic claim in the study's own storage, one winner across processes and machines: a
    marker study named after `what` is created by exactly one caller (the storage refuses a second
    study of that name)."""
    optuna = _optuna()
    try:
        study._storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], f"{study.study_name}.xorship.{what}")
        return True
    except optuna.exceptions.DuplicatedStudyError:
        return False


def _release(study: Any, what: str) -> None:
    optuna = _optuna()
    storage = study._storage
    try:
        storage.delete_study(storage.get_study_id_from_name(f"{study.study_name}.xorship.{what}"))
    except (KeyError, optuna.exceptions.OptunaError):  # released meanwhile
        pass


def _enqueue_start(study: Any, params: dict[str, Any]) -> None:
    """The recipe's own values as a trial, once per study: again only when the earlier one did not
    end as a counted trial (interrupted, abandoned), and then by one process only (a claim)."""
    starts = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("start")]
    records = {r.number: r for r in _records(study)}
    if any(records[t.number].counted or records[t.number].state in ("running", "waiting") for t in starts):
        return
    if _claim(study, f"start-{len(starts) + 1}"):
        study.enqueue_trial(params, user_attrs={"start": "the recipe's own values"})


def _one(study: Any, trial: Any, recipe: Recipe, space: TuneSpace, data: Dataset, device: str, val: Any) -> str | None:
    """Run one asked trial and tell the study how it ended; a line to say when another process had
    already ended it (it judged this one's process gone)."""
    optuna = _optuna()
    state = optuna.trial.TrialState

    def tell(value: float | None = None, to: Any = None, **attrs: Any) -> str | None:
        try:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            if to is None:
                study.tell(trial, value)
            else:
                study.tell(trial, state=to)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as exc:
            if "finished" not in str(exc).lower() and not isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
                raise
            return (
                f"trial {trial.number} was marked abandoned by another process while it ran here (it saw no sign of "
                "life); its result is not recorded"
            )
        return None

    try:
        with _Heartbeat(study, trial):
            attrs = run_trial(trial, recipe, space, data, device, val)
    except _Pruned as p:
        return tell(to=state.PRUNED, step=p.step)
    except TrainingFailed as exc:
        reason = str(exc).replace("; lower --lr", "")
        return tell(to=state.FAIL, reason=reason if reason.startswith("diverged") else f"diverged: {reason}")
    except (KeyboardInterrupt, Terminated):
        tell(to=state.FAIL, reason="interrupted: stopped by Ctrl-C or SIGTERM")
        raise
    except BaseException as exc:  # not the trial's own result (a device gone, a bug): the search stops here
        with contextlib.suppress(Exception):
            tell(to=state.FAIL, reason=f"error: {_first_line(exc)}")
        raise
    value = attrs.pop("value")
    return tell(value, **attrs)


class _Heartbeat:
    """While a trial runs, a counter in its attributes goes up every BEAT_EVERY_S (a thread), so other
    processes, on any host and whatever their clocks, can tell a long trial from a dead one."""

    def __init__(self, study: Any, trial: Any) -> None:
        self.storage, self.trial_id = study._storage, trial._trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="tune-heartbeat", daemon=True)

    def run(self) -> None:
        beat = 0
        while not self.stop.wait(BEAT_EVERY_S):
            beat += 1
            try:
                self.storage.set_trial_user_attr(self.trial_id, "beat", beat)
            except Exception:  # finished meanwhile, or the storage is down: the trial itself will say
                return

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def identity() -> dict[str, Any]:
    """Who runs a trial: host name, a node id that also tells containers and reboots apart (boot id,
    pid namespace), the pid and its start time (so a reused pid is not taken for the same process)."""
    host = socket.gethostname()
    node = host
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        node = f"{host}|{boot}|{os.readlink('/proc/self/ns/pid')}"
    pid = os.getpid()
    return {"host": host, "node": node, "pid": pid, "pid_start": _start_time(pid)}


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux /proc), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command's closing parenthesis


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _start_time(pid) in (None, started)


class Watcher:
    """Marks running trials of dead processes failed ("abandoned"), so they neither count nor block.
    On this node (same host, boot and pid namespace): the pid no longer runs, or runs another process.
    Elsewhere: its heartbeat counter has not moved for ABANDONED_AFTER_S, as this process's own clock
    measures (no clock is compared across hosts)."""

    def __init__(self, me: dict[str, Any]) -> None:
        self.me = me
        self.seen: dict[int, tuple[Any, float]] = {}

    def sweep(self, study: Any) -> None:
        optuna = _optuna()
        now = time.monotonic()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            a = t.user_attrs
            pid = a.get("pid")
            if a.get("node") == self.me["node"] and isinstance(pid, int):  # between trials none is our own
                gone = pid == self.me["pid"] or not _alive(pid, a.get("pid_start"))
            else:
                beat = a.get("beat")
                last = self.seen.get(t._trial_id)
                if last is None or last[0] != beat:
                    self.seen[t._trial_id] = (beat, now)
                    gone = False
                else:
                    gone = now - last[1] > ABANDONED_AFTER_S
            if not gone:
                continue
            try:
                study._storage.set_trial_user_attr(
                    t._trial_id, "reason", f"abandoned: its process ({a.get('host')}, pid {pid}) stopped"
                )
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:  # it finished (or was marked) meanwhile
                pass


def _records(study: Any) -> list[TrialRecord]:
    optuna = _optuna()
    S = optuna.trial.TrialState
    names = {S.COMPLETE: "complete", S.PRUNED: "pruned", S.FAIL: "failed", S.RUNNING: "running", S.WAITING: "waiting"}
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        params = a.get("params") or dict(t.params)
        step = a.get("step") if a.get("step") is not None else t.last_step
        out.append(
            TrialRecord(
                number=t.number,
                state=names.get(t.state, str(t.state)),
                value=t.value if t.state == S.COMPLETE else None,
                params=params,
                metric=a.get("metric"),
                reason=a.get("reason"),
                seconds=a.get("seconds"),
                step=step,
                host=a.get("host"),
                pid=a.get("pid"),
                start=bool(a.get("start")),
            )  # fmt: skip
        )
    return out


def check_trials(trials: int, timeout: float | None) -> None:
    if not 1 <= trials <= MAX_TRIALS:
        raise UsageError(f"--trials {trials}: give the study's total of trials, from 1 to {MAX_TRIALS}")
    if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
        raise UsageError(f"--timeout {timeout}: give seconds > 0")


def best_recipe_text(recipe: Recipe, best: TrialRecord, study: str, storage: StorageChoice) -> str:
    """The user's recipe with the best trial's values, as TOML, with a comment naming the study and
    trial (the data path absolute, so the file works from anywhere)."""
    chosen = recipe_with(recipe, best.params)
    head = (
        f"# Found by `tune`: study {study!r} ({storage.shown}), trial {best.number}, {OBJECTIVE} {best.value:.6g}.\n"
        "# The recipe's own file with the trial's [model] and [train] values; `all --recipe` on this file trains it\n"
        "# on the training rows and gates it on the validation rows, which the search never saw.\n"
    )
    return head + chosen.to_toml()


def _optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError:
        raise MissingDependency("`tune` needs optuna, which is not installed: pip install -e '.[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:300]


def _show(v: Any) -> str:
    return repr(v)[:80]


def _json_float(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# After the search: waiting for the others, one export per best trial, Optuna's plots


def wait_for_running(result: StudyResult, poll: float = 0.5) -> StudyResult:
    """The study once no trial runs any more (those of processes that died are marked abandoned)."""
    from dataclasses import replace as _replace

    study = result.study_ref
    watcher = Watcher(identity())
    while True:
        watcher.sweep(study)
        records = _records(study)
        if not any(t.state == "running" for t in records):
            return _replace(result, trials=tuple(records))
        time.sleep(poll)


def _export_key(model: str, number: int) -> str:
    return f"export.{model}.trial-{number}"


def claim_export(result: StudyResult, model: str, number: int) -> str | None:
    """None: this process publishes trial `number` as model `model` (claimed atomically in the study's
    storage, so one process in all, on any machine, does); otherwise why not: another process published
    it, or is publishing it now. A claim whose export failed, or whose process died, is taken over."""
    study = result.study_ref
    key = _export_key(model, number)
    for _ in range(3):
        if _claim(study, key):
            record_export(result, model, number, "started", None)
            return None
        optuna = _optuna()
        entry = optuna.load_study(study_name=result.study, storage=study._storage).user_attrs.get(key)
        if not isinstance(entry, dict):  # claimed a moment ago, not yet recorded
            return f"trial {number} is being published as {model} by another tune process; nothing exported here"
        owner = f"{entry.get('host')}, pid {entry.get('pid')}"
        if entry.get("state") == "published":
            return (
                f"trial {number} was already published as {model} version {entry.get('version')} by another tune "
                f"process ({owner}); nothing exported here"
            )
        me = identity()
        dead = entry.get("node") == me["node"] and not _alive(int(entry.get("pid", 0)), entry.get("pid_start"))
        if entry.get("state") == "started" and not dead:
            return (
                f"trial {number} is being published as {model} by another tune process ({owner}); nothing exported here"
            )
        _release(study, key)  # failed, or its process died: try again
    return f"trial {number} could not be claimed for publishing (other processes keep taking it); nothing exported here"


def record_export(result: StudyResult, model: str, number: int, state: str, detail: Any) -> None:
    """The export's state in the study (started, published with its version, failed with why)."""
    entry: dict[str, Any] = {"model": model, "trial": number, "state": state, **identity(), "at": time.time()}
    if state == "published":
        entry["version"] = detail
    elif detail is not None:
        entry["detail"] = str(detail)[:300]
    result.study_ref.set_user_attr(_export_key(model, number), entry)
    if state == "failed":
        _release(result.study_ref, _export_key(model, number))


def write_plots(result: StudyResult, folder: Path) -> tuple[list[Path], list[str]]:
    """Optuna's optimization history and parameter importances as PNGs, when matplotlib is there.
    The importances need scikit-learn (Optuna's fANOVA evaluator fits a random forest) and at least two
    complete trials that differ; without them, a note says why."""
    from ..store import artifacts as A

    written: list[Path] = []
    notes: list[str] = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        for name in PLOTS:
            (folder / name).unlink(missing_ok=True)
        return [], ["no plots: matplotlib is not installed (pip install matplotlib)"]
    optuna = _optuna()
    study = result.study_ref
    complete = [t for t in result.trials if t.state == "complete"]
    plots: list[tuple[str, Callable[[], Any]]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from optuna.visualization import matplotlib as ovm

    if complete:
        plots.append(("history.png", lambda: ovm.plot_optimization_history(study, target_name=OBJECTIVE)))
    else:
        notes.append("no history.png: no trial completed")
    try:
        import sklearn  # noqa: F401
    except ModuleNotFoundError:
        notes.append(
            "no importances.png: Optuna's fANOVA importance evaluator needs scikit-learn (pip install scikit-learn)"
        )
    else:
        if len(complete) >= 2:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            plots.append(
                (
                    "importances.png",
                    lambda: ovm.plot_param_importances(study, evaluator=evaluator, target_name=OBJECTIVE),
                )
            )
        else:
            notes.append("no importances.png: parameter importances need at least 2 complete trials")
    for name, draw in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                import io

                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=100)
                plt.close(fig)
        except Exception as exc:  # Optuna cannot draw this study (every trial the same, say)
            notes.append(f"no {name}: {_first_line(exc)}")
            continue
        A.write_output_bytes(folder / name, buf.getvalue(), "--study folder")
        written.append(folder / name)
    for name in PLOTS:  # a picture of an earlier search must not sit beside this tune.json
        stale = folder / name
        if folder / name not in written and (stale.is_file() or stale.is_symlink()):
            stale.unlink()
    return written, notes


def table(result: StudyResult, n: int = 10) -> str:
    """The best complete trials, best first, with the study's counts (for a terminal)."""
    metric = "RMSE" if result.metric_name == "rmse" else "accuracy"
    head = f"{'trial':>5}  {'val loss':>10}  {metric:>8}  {'hidden':<14} {'act':<7} {'opt':<5} {'lr':>9} {'batch':>5} {'steps':>6} {'s':>6}"
    lines = [
        f"study {result.study!r} in {result.storage.shown}: {result.counted} of {result.target} trials counted "
        f"({', '.join(f'{v} {k}' for k, v in sorted(result.states().items()))}); {len(result.ran_here)} ran here",
        f"objective: {OBJECTIVE} ({result.inner_rows[1]} inner validation rows, trained on {result.inner_rows[0]}; "
        + (
            "the gate's validation rows are never seen by the search)"
            if result.gate_unseen
            else "validation_fraction 0: the gate reads the training rows the search trained on)"
        ),
        head,
    ]
    for t in result.ranked(n):
        p = t.params
        hidden = "-".join(str(w) for w in p.get("hidden", [])) or "-"
        m = "" if t.metric is None else f"{t.metric:.4g}"
        secs = "" if t.seconds is None else f"{t.seconds:.1f}"
        lines.append(
            f"{t.number:>5}  {t.value:>10.5g}  {m:>8}  {hidden:<14} {p.get('activation', ''):<7} {p.get('optimizer', ''):<5} "
            f"{p.get('lr', 0):>9.3g} {p.get('batch_size', ''):>5} {p.get('steps', ''):>6} {secs:>6}"
        )
    if len(lines) == 3:
        lines.append("  (no trial completed)")
    return "\n".join(lines)


def progress_table(trial: TrialRecord, counted: int, of: int, best: TrialRecord | None) -> str:
    """One line per finished trial, for a terminal."""
    if trial.state == "complete":
        what = f"loss {trial.value:.5g}" + (f" ({trial.metric:.4g})" if trial.metric is not None else "")
    elif trial.state == "pruned":
        what = f"pruned at step {trial.step}"
    else:
        what = f"failed: {trial.reason}"
    tail = (
        f"best {best.value:.5g} (trial {best.number})" if best is not None and best.value is not None else "no best yet"
    )
    return f"trial {trial.number} {what} | {counted}/{of} trials, {tail}"
