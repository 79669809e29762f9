"""The Ray backend on a local Ray instance (2 CPUs, tiny models): same results as the local backend, worker and
driver SIGKILLs lose and duplicate nothing, bad input fails in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from locedit.cli.main import app  # noqa: E402
from locedit.data.fact import Fact  # noqa: E402
from locedit.experiment.config import dump_toml, parse_config  # noqa: E402
from locedit.experiment.executors import LocalExecutor  # noqa: E402
from locedit.experiment.ray_backend import RayExecutor  # noqa: E402
from locedit.experiment.runner import run_experiment  # noqa: E402
from test_resume_kill import FACTS, assert_consistent, assert_tables_equal, exact_tables, n_units  # noqa: E402

# a prompt longer than the tiny model's context of 512 tokens: its trace unit fails, wherever it runs
BAD_FACT = Fact(3, "Paris", "Paris " + "is a city that " * 200 + "lies in", "France", "Italy")
N_EDITS = len(FACTS) * 2 * 2  # two methods, two layers, one problem; the bad fact is never traced


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray instance for the module: two CPUs, so two workers of one thread each."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-config")
    facts = folder / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in [*FACTS, BAD_FACT]]))
    cfg = parse_config({
        "name": "ray", "model": {"name": "tiny:llama"},
        "data": {"source": str(facts), "correctness_filter": False},
        "localize": {"windows": [3], "samples": 3},
        "edit": {"methods": ["rome", "ft-1"], "problems": ["error-injection"], "layers": [1, 4], "essence": False,
                 "batch_size": 2, "hparams": {"rome": {"v_num_grad_steps": 5}, "ft-1": {"num_steps": 10}}},
        "stats": {"n_tokens": 2000},
        "analysis": {"analyze": False, "report": False},
    })
    path = folder / "ray.toml"
    path.write_text(dump_toml(cfg))
    return path


@pytest.fixture(scope="module")
def local_run(config, tmp_path_factory) -> Path:
    """The reference: the same config on the local backend, in this process, on one thread as each worker
    runs (two threads split matmuls differently: tracing effects would differ by float rounding)."""
    out = tmp_path_factory.mktemp("local") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_experiment(_cfg(config), out, progress=False, executor=LocalExecutor())
    finally:
        torch.set_num_threads(threads)
    assert (result.editing.done, result.tracing.failed) == (N_EDITS, 1)
    return out


def _cfg(path: Path):
    from locedit.experiment.config import load_config

    return load_config(path)


def assert_same_results(a: Path, b: Path) -> None:
    """Same rows in every table; numbers equal to 1e-6 (timing columns excluded)."""
    assert_tables_equal(exact_tables(a), exact_tables(b), atol=1e-6)


def test_ray_backend_gives_the_local_results(config, local_run, tmp_path):
    executor = RayExecutor(workers=2)
    result = run_experiment(_cfg(config), tmp_path / "ray", progress=False, executor=executor)
    assert (result.tracing.done, result.tracing.failed, result.editing.done) == (len(FACTS), 1, N_EDITS)
    assert executor.replaced == 0, "a unit that fails deterministically is not retried on a new worker"
    assert result.summary.errors[0][0] == f"trace:{BAD_FACT.case_id}"
    assert_consistent(tmp_path / "ray" / "results.sqlite")
    assert_same_results(local_run, tmp_path / "ray")
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["sessions"][-1]["backend"] == "ray" and manifest["stats"]["second_moments"]
    assert manifest["sessions"][-1]["workers"] == 2


def test_a_killed_worker_is_replaced_and_its_units_are_retried(config, local_run, tmp_path):
    executor = RayExecutor(workers=2)
    db = tmp_path / "ray" / "results.sqlite"
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.time() + 300
        while n_units(db) < 2 and time.time() < deadline:
            time.sleep(0.05)
        pid = executor.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    result = run_experiment(_cfg(config), tmp_path / "ray", progress=False, executor=executor)
    killer.join(timeout=10)
    assert killed, "no worker was killed"
    assert n_units(db) == N_EDITS and result.editing.failed == 0 and executor.replaced >= 1
    assert_consistent(db)
    assert_same_results(local_run, tmp_path / "ray")


def _ray_run(config: Path, out: Path) -> list[str]:
    address = ray.get_runtime_context().gcs_address
    return [sys.executable, "-m", "locedit.cli.main", "run", str(config), "--out", str(out), "--no-progress",
            "--json", "--backend", "ray", "--address", address, "--workers", "2"]


def test_a_killed_driver_resumes_with_the_same_command(config, local_run, tmp_path):
    out, db = tmp_path / "ray", tmp_path / "ray" / "results.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_ray_run(config, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while n_units(db) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = assert_consistent(db)
    done_before = sum(u.startswith("edit:") for u in before)
    assert 3 <= done_before < N_EDITS, "the driver was not killed mid-sweep"

    resumed = subprocess.run(_ray_run(config, out), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["editing"]["skipped"] == done_before
    assert summary["editing"]["done"] == N_EDITS - done_before
    after = assert_consistent(db)
    assert all(after[u] == t for u, t in before.items()), "a completed unit was recomputed"
    assert_same_results(local_run, out)


@pytest.mark.parametrize("flags, message", [
    (["--backend", "ray", "--workers", "0"], "--workers must be >= 1"),
    (["--backend", "ray", "--threads-per-worker", "0"], "--threads-per-worker must be >= 1"),
    (["--backend", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at --address 127.0.0.1:1"),
    (["--backend", "local", "--workers", "2"], "only for the ray backend"),
    (["--backend", "spark"], "unknown --backend 'spark'"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_backend_input_fails_in_one_line_before_model_work(config, tmp_path, flags, message):
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_without_ray_the_backend_names_the_extra(config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--backend", "ray"])
    assert result.exit_code == 2 and "pip install 'locedit[ray]'" in result.stderr, result.stderr


def test_run_help_names_the_ray_extra():
    """Rich markup would swallow an unescaped ``[ray]``: the help must show the install command whole."""
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "pip install 'locedit[ray]'" in result.output
