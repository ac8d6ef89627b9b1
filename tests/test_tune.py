"""`tune`: trials on the inner split only, --trials as the study's total across processes and resumes,
failed trials with their reason, studies refused when the recipe, space or data changed, the best recipe
written and published. The end-to-end and multi-process tests run the CLI in subprocesses (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from pipeline.errors import UsageError
from pipeline.spec.data import inner_dataset, load_dataset, recipe_columns, split_rows
from pipeline.spec.recipe import load_recipe
from pipeline.training import tune as TU

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

SPACE = """
[tune]
layers = [1, 2]
width = [4, 16]
activation = ["relu", "tanh"]
lr = [0.003, 0.1]
batch_size = [0, 32]
optimizer = ["adam", "sgd"]
steps = [20, 60]
"""


def write_table(folder: Path, rows: int = 150, seed: int = 0) -> Path:
    """A small binary table with a text column and gaps: enough for a split and an inner split."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    y = ((a + b + (color == "red")) > 0.5).astype(int)
    lines = ["a,b,color,y"]
    for i in range(rows):
        av = "" if i % 17 == 0 else f"{a[i]:.4f}"
        lines.append(f"{av},{b[i]:.4f},{color[i]},{y[i]}")
    path = folder / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_recipe(folder: Path, space: str = SPACE, name: str = "toy", extra: str = "") -> Path:
    write_table(folder)
    text = f"""name = "{name}"
[model]
hidden = [8]
activation = "relu"
[data]
path = "t.csv"
target = "y"
validation_fraction = 0.2
[train]
optimizer = "adam"
lr = 0.01
steps = 40
{extra}
[gate]
min_accuracy = 0.5
{space}"""
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def toy(tmp_path) -> Path:
    return write_recipe(tmp_path)


def study(recipe_path: Path, trials: int, **kw):
    recipe = load_recipe(recipe_path)
    data = inner_dataset(recipe_columns(recipe), recipe.data)
    folder = recipe_path.parent / "artifacts" / "_tune" / kw.pop("name", recipe.name)
    storage = TU.storage_choice(kw.pop("storage", None), folder)
    return TU.run_study(recipe, data, storage=storage, study_name=folder.name, trials=trials, device="cpu", **kw)


# ---------------------------------------------------------------------------------------------
# The inner split


def test_inner_split_is_made_of_training_rows_only_and_refits_everything(toy):
    recipe = load_recipe(toy)
    cols = recipe_columns(recipe)
    outer = load_dataset(recipe)
    inner = inner_dataset(cols, recipe.data)
    train, val = split_rows(cols.y, cols.task, 0.2, 0, len(cols.classes))
    assert np.array_equal(train, outer.train_rows)
    # the inner data set is the outer training rows, in order: the gate's validation rows are not in it
    assert inner.rows == len(train)
    assert np.array_equal(inner.y, cols.y[train])
    a = [c for c in cols.raw if c.name == "a"][0]
    inner_a = [c for c in inner.raw if c.name == "a"][0]
    assert np.array_equal(inner_a.values, a.values[train], equal_nan=True)
    assert len(inner.val_rows) == round(0.2 * len(train)) or abs(len(inner.val_rows) - 0.2 * len(train)) <= 2
    # everything is fitted on the inner training rows: the fill value is their median, the categories theirs
    assert inner.encoding is not None
    codes = {c.name: c for c in inner.encoding.columns}
    rows = inner.train_rows
    assert codes["a"].impute[0] == pytest.approx(float(np.nanmedian(inner_a.values[rows])), rel=1e-6)
    color = [c for c in inner.raw if c.name == "color"][0]
    assert set(codes["color"].categories) == {v for v in color.values[rows] if v is not None}
    assert inner.stats.mean != outer.stats.mean


def test_builtin_xor_has_nothing_to_search(tmp_path):
    from pipeline import flow
    from pipeline.spec.recipe import builtin_recipe

    with pytest.raises(UsageError, match="4 XOR points"):
        flow.run_tune(builtin_recipe("shallow"), 3, artifacts_dir=tmp_path)


def test_watching_a_run_does_not_change_it(toy):
    from pipeline.flow import network_for
    from pipeline.training.train import TrainConfig, train

    recipe = load_recipe(toy)
    data = load_dataset(recipe)
    arch = network_for(recipe, data)
    cfg = TrainConfig(arch=arch, steps=50, lr=0.01, seed=3, device="cpu", optimizer="adam", batch_size=32, log_every=5)
    seen: list[int] = []
    plain = train(cfg, None, data)
    watched = train(
        cfg,
        None,
        data,
        watch=lambda step, loss, model: (
            seen.append(step) or TU._loss_on(model, arch, *TU._inner_validation(data, data.task, False))
        ),
    )
    assert plain.losses == watched.losses
    assert seen == list(range(0, 50, 5))


# ---------------------------------------------------------------------------------------------
# The study


def test_trials_is_the_study_total_and_a_rerun_tops_up(toy):
    first = study(toy, 4)
    assert first.counted == 4 and first.created and len(first.ran_here) == 4
    assert first.trials[0].params["hidden"] == [8] and first.trials[0].params["lr"] == 0.01  # the recipe's values
    again = study(toy, 4)
    assert again.ran_here == () and again.counted == 4 and not again.created
    more = study(toy, 7)
    assert more.counted == 7 and len(more.ran_here) == 3
    numbers = [t.number for t in more.trials]
    assert numbers == sorted(set(numbers))
    best = more.best
    assert best is not None and best.value == min(t.value for t in more.trials if t.state == "complete")
    assert more.metric_name == "accuracy" and best.metric is not None and 0 <= best.metric <= 1


def test_a_diverged_trial_is_a_failed_trial_with_its_reason(tmp_path):
    path = write_recipe(tmp_path, SPACE.replace("lr = [0.003, 0.1]", "lr = [1e6, 1e7]").replace(
        'optimizer = ["adam", "sgd"]', 'optimizer = "sgd"'))  # fmt: skip
    result = study(path, 3)
    failed = [t for t in result.trials if t.state == "failed"]
    assert failed, result.trials
    assert all(t.reason and t.reason.startswith("diverged") for t in failed)
    assert all(t.counted for t in failed)  # a trial of its own that failed counts toward --trials
    assert result.counted == 3


def test_an_interrupted_trial_is_recorded_and_not_counted(toy, monkeypatch):
    calls = {"n": 0}
    real = TU.run_trial

    def stopping(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(TU, "run_trial", stopping)
    with pytest.raises(KeyboardInterrupt):
        study(toy, 5)
    monkeypatch.setattr(TU, "run_trial", real)
    after = study(toy, 5)
    interrupted = [t for t in after.trials if t.reason and t.reason.startswith("interrupted")]
    assert len(interrupted) == 1 and not interrupted[0].counted
    assert after.counted == 5 and len(after.ran_here) == 3


def _foreign_trial(recipe_path: Path, attrs: dict):
    """A running trial in the toy study, as another process would have asked for it (with `attrs`)."""
    import optuna

    recipe = load_recipe(recipe_path)
    storage = TU.open_storage(TU.storage_choice(None, recipe_path.parent / "artifacts" / "_tune" / recipe.name))
    s = optuna.load_study(study_name=recipe.name, storage=storage)
    trial = s.ask()
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return s, trial


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_trial_whose_process_died_is_abandoned_and_not_counted(toy):
    study(toy, 2)
    _, orphan = _foreign_trial(toy, {**TU.identity(), "pid": _dead_pid(), "pid_start": "1"})
    result = study(toy, 3)
    record = next(t for t in result.trials if t.number == orphan.number)
    assert record.state == "failed" and record.reason.startswith("abandoned") and not record.counted
    assert result.counted == 3


def test_a_trial_running_elsewhere_counts_until_it_ends(toy):
    study(toy, 2)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _foreign_trial(toy, {**TU.identity(), "pid": other.pid, "pid_start": TU._start_time(other.pid)})
        result = study(toy, 3)
        assert result.stopped_by == "others" and result.ran_here == ()
    finally:
        other.kill()
        other.wait()


def test_a_study_of_another_recipe_space_or_data_is_refused(tmp_path):
    path = write_recipe(tmp_path)
    study(path, 2)
    text = path.read_text()
    path.write_text(text.replace("width = [4, 16]", "width = [4, 32]"))
    with pytest.raises(
        TU.StudyMismatch, match=r"another search space: \[tune\] width is \[4, 32\] here, \[4, 16\] in the study"
    ):
        study(path, 3)
    path.write_text(text.replace("validation_fraction = 0.2", "validation_fraction = 0.3"))
    with pytest.raises(TU.StudyMismatch, match=r"another recipe: \[data\] validation_fraction is 0.3 here, 0.2"):
        study(path, 3)
    path.write_text(text)
    (tmp_path / "t.csv").write_text((tmp_path / "t.csv").read_text().replace("red", "rouge", 1))
    with pytest.raises(TU.StudyMismatch, match="the data file changed"):
        study(path, 3)
    # a new study name starts afresh
    assert study(path, 2, name="fresh").counted == 2
    # the searched keys may change: they are what the search sets
    (tmp_path / "t.csv").write_text((tmp_path / "t.csv").read_text().replace("rouge", "red", 1))
    path.write_text(text.replace("steps = 40", "steps = 50"))
    assert study(path, 2).counted == 2


def test_timeout_stops_asking_for_trials(toy):
    result = study(toy, 50, timeout=0.01)
    assert result.stopped_by == "timeout" and 1 <= len(result.ran_here) <= 2 and result.counted < 50


def test_the_gate_and_name_may_change_without_a_new_study(toy):
    study(toy, 2)
    toy.write_text(toy.read_text().replace("min_accuracy = 0.5", "min_accuracy = 0.6"))
    assert study(toy, 3).counted == 3


def test_an_error_in_a_trial_stops_the_search_and_is_not_counted(toy, monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("device lost")

    monkeypatch.setattr(TU, "run_trial", broken)
    with pytest.raises(RuntimeError):
        study(toy, 3)
    monkeypatch.undo()
    after = study(toy, 3)
    errored = [t for t in after.trials if t.reason and t.reason.startswith("error")]
    assert len(errored) == 1 and "device lost" in errored[0].reason and not errored[0].counted
    assert after.counted == 3


def test_cuda_without_a_gpu_is_refused_before_any_trial(toy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = runner.invoke(
        cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", str(toy.parent / "a"), "--device", "cuda"]
    )
    assert r.exit_code == 3 and "sees no CUDA device" in r.stderr
    assert not (toy.parent / "a" / "_tune").exists()


@pytest.mark.parametrize("trials", [0, -1, TU.MAX_TRIALS + 1])
def test_trials_out_of_range(toy, trials):
    with pytest.raises(UsageError, match=f"--trials {trials}"):
        study(toy, trials)


def test_storage_must_be_a_url_and_reachable(toy, tmp_path):
    with pytest.raises(UsageError, match="is not a database URL"):
        TU.storage_choice("nowhere", tmp_path)
    with pytest.raises(UsageError, match=r"cannot reach --storage sqlite:////nonexistent-folder/x.db"):
        study(toy, 1, storage="sqlite:////nonexistent-folder/x.db")
    with pytest.raises(UsageError, match=r"cannot reach --storage postgresql://u:\*\*\*@127.0.0.1:9/x"):
        study(toy, 1, storage="postgresql://u:secret@127.0.0.1:9/x")


def test_sqlite_storage_says_it_creates_tables_once(toy):
    notes: list[str] = []
    url = f"sqlite:///{toy.parent / 's.db'}"
    study(toy, 1, storage=url, on_notice=notes.append)
    assert any("creating Optuna's tables" in n for n in notes)
    notes.clear()
    study(toy, 2, storage=url, on_notice=notes.append)
    assert not any("creating" in n for n in notes)


def test_the_start_trial_is_skipped_when_the_recipe_lies_outside_the_space(tmp_path):
    path = write_recipe(tmp_path, SPACE.replace("width = [4, 16]", "width = [32, 64]"))
    notes: list[str] = []
    result = study(path, 2, on_notice=notes.append)
    assert any("outside the [tune] space" in n for n in notes)
    assert all(t.params["hidden"][0] >= 32 for t in result.trials)


def test_per_layer_widths_are_conditional_and_said(tmp_path):
    path = write_recipe(tmp_path, SPACE + "per_layer_width = true\n")
    notes: list[str] = []
    result = study(path, 6, on_notice=notes.append)
    assert any("conditional" in n for n in notes)
    for t in result.trials:
        assert 1 <= len(t.params["hidden"]) <= 2


# ---------------------------------------------------------------------------------------------
# The command: files, best recipe, errors


def test_tune_writes_best_recipe_and_trials_file(toy):
    r = runner.invoke(
        cli.app,
        [
            "tune",
            "--recipe",
            str(toy),
            "--trials",
            "4",
            "--artifacts-dir",
            str(toy.parent / "artifacts"),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    folder = toy.parent / "artifacts" / "_tune" / "toy"
    assert doc["counted"] == 4 and Path(doc["best_recipe"]) == folder / "best.toml"
    data = json.loads((folder / "tune.json").read_text())
    assert data["objective"] == "inner validation loss" and len(data["trials"]) == 4
    assert data["best"]["number"] == doc["best"]["number"]
    best = load_recipe(folder / "best.toml")
    params = doc["best"]["params"]
    assert list(best.model.hidden) == params["hidden"] and best.train.lr == params["lr"]
    assert best.train.steps == params["steps"] and best.name == "toy" and best.tune == load_recipe(toy).tune
    text = (folder / "best.toml").read_text()
    assert "study 'toy'" in text and f"trial {doc['best']['number']}" in text
    assert (folder / "history.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials 0"),
        (["--storage", "postgresql://u:pw@127.0.0.1:9/x"], "cannot reach --storage postgresql://u:***@127.0.0.1:9/x"),
        (["--study", "../x"], "--study '../x' must match"),
    ],
)
def test_bad_options_are_one_line_errors(toy, args, message):
    r = runner.invoke(cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", str(toy.parent / "a"), *args])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in r.output


def test_bad_tune_section_is_one_line_error(tmp_path):
    path = write_recipe(tmp_path, SPACE + "widht = 3\n")
    r = runner.invoke(cli.app, ["tune", "--recipe", str(path), "--artifacts-dir", str(tmp_path / "a")])
    assert r.exit_code == 2 and "unknown key 'widht' in [tune]" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_changed_space_is_refused_by_the_command(tmp_path):
    path = write_recipe(tmp_path)
    args = ["tune", "--recipe", str(path), "--artifacts-dir", str(tmp_path / "a"), "--trials", "2", "--device", "cpu"]
    assert runner.invoke(cli.app, args).exit_code == 0
    path.write_text(path.read_text().replace("layers = [1, 2]", "layers = [1, 3]"))
    r = runner.invoke(cli.app, args)
    assert r.exit_code == 2 and "give a new --study NAME" in r.stderr
    assert runner.invoke(cli.app, [*args, "--study", "other"]).exit_code == 0


# ---------------------------------------------------------------------------------------------
# Processes (slow)


def _cli(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "tune", *args, "--device", "cpu", "--json"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _two_processes(folders: list[Path], trials: int, *extra: str) -> list[dict]:
    procs = [_cli(f, "--recipe", "toy.toml", "--trials", str(trials), *extra) for f in folders]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        docs.append(json.loads(out))
    return docs


def _check_shared(docs: list[dict], trials: int) -> None:
    ran = [set(d["ran_here"]) for d in docs]
    assert not (ran[0] & ran[1]), "a trial ran in both processes"
    assert max(d["counted"] for d in docs) == trials
    assert all(ran), "each process ran trials of the shared study"


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["embedded", "sqlite"])
def test_two_processes_share_one_study_and_one_publishes(tmp_path, storage):
    """Embedded: two processes in one folder. SQLite: two "machines" (separate folders and artifacts)
    on one database. Either way the study ends with 12 counted trials, none run twice, and exactly one
    process publishes the best trial (the claim is in the study's storage); the other says so."""
    space = SPACE.replace("steps = [20, 60]", "steps = [200, 400]")
    if storage == "embedded":
        folders, extra = [tmp_path, tmp_path], []
        write_recipe(tmp_path, space)
    else:
        folders = [tmp_path / "machine-a", tmp_path / "machine-b"]
        for f in folders:
            f.mkdir()
            write_recipe(f, space)
        extra = ["--storage", f"sqlite:///{tmp_path / 'tune.db'}", "--study", "shared"]
    docs = _two_processes(folders, 12, "--export-best", *extra)
    _check_shared(docs, 12)
    published = [d for d in docs if d["published_version"] is not None]
    assert len(published) == 1, docs
    other = next(d for d in docs if d["published_version"] is None)
    assert "nothing exported here" in other["export_note"]
    assert published[0]["best"]["number"] == other["best"]["number"]
    final = json.loads((folders[docs.index(published[0])] / published[0]["written"][0]).read_text())
    counted = [t for t in final["trials"] if t["counted"]]
    assert len(counted) == 12 and len({t["number"] for t in counted}) == 12


POSTGRES = os.environ.get("XORSHIP_TEST_POSTGRES")


def _postgres_reachable(url: str) -> str | None:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).splitlines()[0]


@pytest.mark.slow
def test_two_processes_in_separate_folders_share_a_postgresql_study(tmp_path):
    if not POSTGRES:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but XORSHIP_TEST_POSTGRES is not set: .ci/run starts a PostgreSQL server for this test"
            )
        pytest.skip("no PostgreSQL server: set XORSHIP_TEST_POSTGRES=postgresql://user:pw@127.0.0.1/db (.ci/postgres)")
    problem = _postgres_reachable(POSTGRES)
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL at XORSHIP_TEST_POSTGRES is unreachable: {problem}")
        pytest.skip(f"PostgreSQL at XORSHIP_TEST_POSTGRES is unreachable: {problem}")
    folders = [tmp_path / "machine-a", tmp_path / "machine-b"]
    for f in folders:
        f.mkdir()
        write_recipe(f, SPACE.replace("steps = [20, 60]", "steps = [200, 400]"))
    name = f"toy-{os.getpid()}-{time.time_ns()}"
    docs = _two_processes(folders, 10, "--storage", POSTGRES, "--study", name)
    _check_shared(docs, 10)
    assert all(
        d["storage"].startswith("postgresql://xorship:***@") or "***" in d["storage"] or "@" not in d["storage"]
        for d in docs
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_exits_130_or_143_and_the_same_command_resumes(tmp_path, sig):
    # every trial takes seconds (the recipe's own 40 steps lie outside the space: no quick first trial)
    write_recipe(tmp_path, SPACE.replace("steps = [20, 60]", "steps = [20000, 30000]"))
    p = _cli(tmp_path, "--recipe", "toy.toml", "--trials", "2")
    journal = tmp_path / "artifacts" / "_tune" / "toy" / "journal.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.exists() and b'"pid_start"' in journal.read_bytes()):
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "recorded as failed (interrupted)" in err and "Traceback" not in err
    stopped = json.loads(out)  # --json: one document even when stopped
    assert stopped["exit_code"] == p.returncode and not stopped["passed"]
    r = _cli(tmp_path, "--recipe", "toy.toml", "--trials", "2")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    doc = json.loads(out)
    assert doc["counted"] == 2 and doc["states"].get("failed (interrupted)", 0) == 1


@pytest.mark.slow
def test_wine_50_trials_export_best_publishes_the_searched_recipe(tmp_path):
    """The issue's "done when": init on scikit-learn's wine table, then tune --trials 50 --export-best."""
    from sklearn.datasets import load_wine

    load_wine(as_frame=True).frame.to_csv(tmp_path / "wine.csv", index=False)
    init = subprocess.run([sys.executable, str(ROOT / "cli.py"), "init", "--data", "wine.csv", "--target", "target"],
                          cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert init.returncode == 0, init.stderr
    assert "# [tune]" in (tmp_path / "wine.toml").read_text()
    p = _cli(tmp_path, "--recipe", "wine.toml", "--trials", "50", "--export-best")
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["counted"] == 50 and doc["published_version"] == 1
    manifest = json.loads((tmp_path / "artifacts" / "wine" / "v1" / "manifest.json").read_text())
    params = doc["best"]["params"]
    assert manifest["recipe"]["model"]["hidden"] == params["hidden"]
    assert manifest["recipe"]["model"]["activation"] == params["activation"]
    assert manifest["recipe"]["train"]["lr"] == params["lr"] and manifest["recipe"]["train"]["steps"] == params["steps"]
    assert manifest["verify"]["passed"] and (tmp_path / "artifacts" / "wine" / "PUBLISHED").read_text().strip() == "1"
    # a second process finding that trial published says so and exports nothing
    q = _cli(tmp_path, "--recipe", "wine.toml", "--trials", "50", "--export-best")
    out, err = q.communicate(timeout=600)
    assert q.returncode == 0, err
    again = json.loads(out)
    assert again["published_version"] is None and "already published" in again["export_note"]
    assert again["ran_here"] == []


# ---------------------------------------------------------------------------------------------
# Red team: what broke once, each class tested


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:se/cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h:5432/db?password=secret&sslmode=require",
            "postgresql://u@h:5432/db?password=***&sslmode=require",
        ),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_passwords_are_never_shown(url, shown):
    assert TU.masked(url) == shown
    assert "secret" not in TU.storage_choice(url, Path("/tmp")).shown


def test_a_password_in_the_query_stays_out_of_messages_and_files(toy):
    url = "postgresql://u@127.0.0.1:9/x?password=secret"
    r = runner.invoke(
        cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", str(toy.parent / "a"), "--storage", url]
    )
    assert r.exit_code == 2 and "secret" not in r.output and "password=***" in r.stderr


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url, tmp_path):
    with pytest.raises(UsageError, match="in-memory SQLite database is neither shared nor resumable"):
        TU.storage_choice(url, tmp_path)


def test_a_trial_of_another_node_is_abandoned_only_when_its_heartbeat_stops(toy, monkeypatch):
    import optuna

    study(toy, 1)
    # a dead pid on another node says nothing about that process
    attrs = {"host": "elsewhere", "node": "elsewhere|boot|ns", "pid": _dead_pid(), "pid_start": "1", "beat": 0}
    s, other = _foreign_trial(toy, attrs)
    clock = [1000.0]
    monkeypatch.setattr(TU.time, "monotonic", lambda: clock[0])
    watcher = TU.Watcher(TU.identity())
    watcher.sweep(s)
    clock[0] += TU.ABANDONED_AFTER_S - 1
    other.set_user_attr("beat", 1)  # alive: its heartbeat moved
    watcher.sweep(s)
    clock[0] += TU.ABANDONED_AFTER_S - 1
    watcher.sweep(s)
    assert s.trials[other.number].state == optuna.trial.TrialState.RUNNING
    clock[0] += 2
    watcher.sweep(s)
    t = optuna.load_study(study_name=s.study_name, storage=s._storage).trials[other.number]
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["reason"].startswith("abandoned")


def test_a_reused_pid_is_not_the_trial_s_process(toy):
    study(toy, 1)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # its pid runs, but a process started at another time
        _, t = _foreign_trial(toy, {**TU.identity(), "pid": other.pid, "pid_start": "1"})
        result = study(toy, 2)
        assert next(r for r in result.trials if r.number == t.number).reason.startswith("abandoned")
        assert result.counted == 2
    finally:
        other.kill()
        other.wait()


def test_a_trial_ended_by_another_process_meanwhile_does_not_crash_its_owner(toy, monkeypatch):
    import optuna

    real = TU.run_trial
    calls = {"n": 0}

    def judged_dead(trial, *a, **kw):  # the first trial is marked failed by "another process" as it runs
        out = real(trial, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            trial.study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return out

    monkeypatch.setattr(TU, "run_trial", judged_dead)
    notes: list[str] = []
    result = study(toy, 2, on_notice=notes.append)
    assert any("marked abandoned by another process" in n for n in notes)
    assert result.counted == 2 and len(result.ran_here) == 3


def test_the_recipe_s_own_trial_is_queued_again_when_it_was_interrupted(toy, monkeypatch):
    def stop(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(TU, "run_trial", stop)
    with pytest.raises(KeyboardInterrupt):
        study(toy, 3)
    monkeypatch.undo()
    result = study(toy, 3)
    starts = [t for t in result.trials if t.start]
    assert [t.state for t in starts] == ["failed", "complete"]
    assert starts[1].params["hidden"] == [8] and starts[1].params["lr"] == 0.01 and starts[1].params["steps"] == 40
    assert result.counted == 3


def test_a_storage_that_fails_mid_search_is_one_line(toy, monkeypatch):
    import optuna

    calls = {"n": 0}
    real = TU._records

    def failing(s):
        calls["n"] += 1
        if calls["n"] > 3:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit") from OSError(
                "server closed the connection unexpectedly"
            )
        return real(s)

    monkeypatch.setattr(TU, "_records", failing)
    with pytest.raises(UsageError, match="storage .* failed: server closed the connection unexpectedly"):
        study(toy, 5)


def test_an_artifacts_folder_that_cannot_be_made_is_one_line(toy):
    r = runner.invoke(cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", "/proc/no-such-folder"])
    assert r.exit_code == 11 and "internal error" not in r.output and len(r.stderr.strip().splitlines()) == 1


def test_a_damaged_journal_is_one_line(toy):
    study(toy, 1)
    journal = toy.parent / "artifacts" / "_tune" / "toy" / "journal.log"
    journal.write_bytes(b"this is not a journal line\n" + journal.read_bytes())
    r = runner.invoke(cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", str(toy.parent / "artifacts")])
    assert r.exit_code == 2 and "is damaged" in r.stderr and "internal error" not in r.output


def test_no_inner_validation_rows_is_refused_before_any_trial(tmp_path):
    path = write_recipe(tmp_path)
    (tmp_path / "t.csv").write_text("a,b,color,y\n1,2,red,0\n2,3,blue,1\n3,1,red,0\n4,5,blue,1\n")
    path.write_text(path.read_text().replace("validation_fraction = 0.2", "validation_fraction = 0.5"))
    with pytest.raises(UsageError, match="leave no inner validation rows"):
        study(path, 2)


def test_a_constant_feature_on_the_inner_rows_says_which_rows(tmp_path):
    path = write_recipe(tmp_path)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    rows = [line + ",0" for line in lines[1:]]
    recipe = load_recipe(path)
    cols = recipe_columns(recipe)
    train, _ = split_rows(cols.y, cols.task, 0.2, 0, len(cols.classes))
    inner_train, inner_val = split_rows(cols.y[train], cols.task, 0.2, 0, len(cols.classes))
    special = int(train[inner_val[0]])  # a row the search judges on, never trains on
    rows[special] = rows[special][:-2] + ",5"
    (tmp_path / "t.csv").write_text("\n".join([lines[0] + ",rare", *rows]) + "\n")
    with pytest.raises(UsageError, match="constant .* on tune's inner training rows"):
        study(path, 1)


def test_a_stale_best_recipe_is_removed(tmp_path):
    path = write_recipe(tmp_path)
    args = ["tune", "--recipe", str(path), "--artifacts-dir", str(tmp_path / "a"), "--trials", "1", "--study", "s"]
    assert runner.invoke(cli.app, args).exit_code == 0
    assert (tmp_path / "a" / "_tune" / "s" / "best.toml").exists()
    bad = write_recipe(tmp_path, SPACE.replace("lr = [0.003, 0.1]", "lr = [1e6, 1e7]").replace(
        'optimizer = ["adam", "sgd"]', 'optimizer = "sgd"'), name="bad")  # fmt: skip
    bad.write_text(bad.read_text().replace("lr = 0.01", "lr = 1e6").replace('optimizer = "adam"', 'optimizer = "sgd"'))
    r = runner.invoke(cli.app, ["tune", "--recipe", str(bad), "--artifacts-dir", str(tmp_path / "a"), "--trials", "2",
                                "--study", "s", "--storage", f"sqlite:///{tmp_path / 's.db'}"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "a" / "_tune" / "s" / "best.toml").exists() and "removed the old best.toml" in r.stderr


def test_an_output_that_is_a_folder_is_refused_before_the_search(toy):
    folder = toy.parent / "artifacts" / "_tune" / "toy"
    (folder / "tune.json").mkdir(parents=True)
    r = runner.invoke(cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", str(toy.parent / "artifacts")])
    assert r.exit_code == 2 and "tune.json" in r.stderr
    assert not (folder / "journal.log").exists()


def test_a_space_with_every_key_fixed_and_a_negative_seed_are_refused(tmp_path):
    fixed = "[tune]\nlayers = 1\nwidth = 8\nactivation = 'relu'\nlr = 0.01\nbatch_size = 0\noptimizer = 'adam'\nsteps = 40\n"
    path = write_recipe(tmp_path, fixed)
    r = runner.invoke(cli.app, ["tune", "--recipe", str(path), "--artifacts-dir", str(tmp_path / "a")])
    assert r.exit_code == 2 and "every key of [tune] is fixed" in r.stderr
    path = write_recipe(tmp_path)
    r = runner.invoke(cli.app, ["tune", "--recipe", str(path), "--artifacts-dir", str(tmp_path / "a"), "--seed", "-1"])
    assert r.exit_code == 2 and "--seed -1" in r.stderr


def test_complete_trials_record_their_last_step_and_diverged_ones_no_cli_advice(tmp_path):
    path = write_recipe(tmp_path, SPACE.replace("lr = [0.003, 0.1]", "lr = [1e6, 1e7]").replace(
        'optimizer = ["adam", "sgd"]', 'optimizer = "sgd"'))  # fmt: skip
    result = study(path, 3)
    for t in result.trials:
        if t.state == "complete":
            assert t.step == t.params["steps"]
        if t.state == "failed":
            assert "--lr" not in (t.reason or "")


def test_export_is_refused_while_another_run_holds_the_artifacts(toy):
    from pipeline.store import artifacts as A

    root = toy.parent / "artifacts"
    args = [
        "tune",
        "--recipe",
        str(toy),
        "--artifacts-dir",
        str(root),
        "--trials",
        "2",
        "--device",
        "cpu",
        "--export-best",
    ]
    with A.run_lock(root):
        r = runner.invoke(cli.app, args)
    assert r.exit_code == 12 and "in use by another run" in r.stderr


def test_a_fresh_study_with_the_same_seed_proposes_the_same_trials_and_processes_differ(toy):
    a = study(toy, 6, name="first", seed=5)
    b = study(toy, 6, name="second", seed=5)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert a.process_index == b.process_index == 1 and a.sampler_seed == b.sampler_seed
    again = study(toy, 8, name="first", seed=5)  # a resume is the study's second process: another seed
    assert again.process_index == 2 and again.sampler_seed != a.sampler_seed


@pytest.mark.slow
def test_export_best_falls_back_to_the_next_best_trial_that_trains(toy, monkeypatch):
    from pipeline import flow
    from pipeline.errors import TrainingFailed

    real = flow.run_all
    calls: list[str] = []

    def diverging_first(recipe, *a, **kw):
        calls.append(str(recipe.source))
        if len(calls) == 1:
            raise TrainingFailed("training diverged at step 2: loss 27.6 (step 0: 1.09)")
        return real(recipe, *a, **kw)

    monkeypatch.setattr(flow, "run_all", diverging_first)
    run = flow.run_tune(load_recipe(toy), 4, artifacts_dir=toy.parent / "artifacts", device="cpu", export_best=True)
    ranked = run.result.ranked(3)
    assert run.published is not None and run.published.number == 1
    assert run.published_trial == ranked[1].number and run.export_note and "the best that trained" in run.export_note
    assert calls[0].endswith("best.toml") and calls[1].endswith(f"trial-{ranked[1].number}.toml")


def test_symbolic_links_in_the_study_folder_are_refused(toy, tmp_path_factory):
    """Nothing tune writes goes through a link to a file elsewhere: exit 6, the file elsewhere untouched."""
    outside = tmp_path_factory.mktemp("outside") / "victim.txt"
    outside.write_text("keep me")
    folder = toy.parent / "artifacts" / "_tune" / "toy"
    folder.mkdir(parents=True)
    for name in ("tune.json", "journal.log", "best.toml"):
        link = folder / name
        link.symlink_to(outside)
        r = runner.invoke(cli.app, ["tune", "--recipe", str(toy), "--artifacts-dir", str(toy.parent / "artifacts")])
        assert r.exit_code == 6 and "is a symbolic link" in r.stderr and "internal error" not in r.output
        assert outside.read_text() == "keep me"
        link.unlink()
