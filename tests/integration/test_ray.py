"""`label --backend ray` on a local Ray cluster (2 CPUs) with the real Gemma teacher on real BBC texts.

Checked: the same distributions as the local backend, one row per text, nothing resent on a re-run, and a
worker SIGKILLed mid-run loses nothing (its batch goes to the other worker; Ray restarts the dead one).
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ray  # an optional extra for users; `make setup` installs it, so it is never skipped here

from llkd_edge.config import LabelRunConfig, LabelSet, RayConfig, ScoringConfig, TeacherConfig
from llkd_edge.data import load_builtin
from llkd_edge.errors import UserError
from llkd_edge.labels.labelling import label_texts

BBC_LABELS = LabelSet.parse(load_builtin("bbc-news:test").labels)

N = 64


@pytest.fixture(scope="module")
def scoring(bbc_test):
    return ScoringConfig(labels=BBC_LABELS, task=bbc_test.task, max_text_tokens=64)


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, scoring):
    """The local backend's distributions for the first N test texts (the reference)."""
    store = tmp_path_factory.mktemp("local") / "labels.sqlite"
    summary = label_texts(LabelRunConfig(data="bbc-news:test", scoring=scoring, store=str(store), limit=N,
                                         teacher=TeacherConfig(n_threads=2)), progress=False)
    assert summary.labelled == N
    return read_store(store)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def read_store(path) -> dict[str, tuple[str, np.ndarray]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT text_hash, config_hash, probs FROM labels").fetchall()
    finally:
        db.close()
    out = {h: (cfg, np.array(json.loads(p))) for h, cfg, p in rows}
    assert len(out) == len(rows), "one row per text"
    return out


def assert_same(rows, reference):
    assert set(rows) == set(reference)
    for h, (cfg, probs) in rows.items():
        assert cfg == reference[h][0]
        assert np.allclose(probs, reference[h][1], rtol=0, atol=1e-9), h


def test_cli_ray_backend_gives_the_local_backends_distributions_and_resends_nothing(tmp_path, local_rows):
    store = tmp_path / "labels.sqlite"
    args = [sys.executable, "-m", "llkd_edge.cli", "label", "bbc-news:test", "--limit", str(N), "--max-text-tokens",
            "64", "--store", str(store), "--backend", "ray", "--workers", "2", "--prompt", "fixed", "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert (summary["backend"], summary["workers"], summary["labelled"]) == ("ray", 2, N)
    assert_same(read_store(store), local_rows)

    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads(again.stdout)
    assert (rerun["labelled"], rerun["cached"]) == (0, N)  # texts already in the store are never sent
    assert rerun["accuracy"] == summary["accuracy"]


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, cluster, scoring, local_rows):
    from llkd_edge.teacher.ray_pool import RayTeacherPool

    store = tmp_path / "labels.sqlite"
    pool = RayTeacherPool(scoring, TeacherConfig(), RayConfig(workers=2), progress=False)
    try:
        victim = pool.pids()[0]
        killed = threading.Event()
        finished = threading.Event()

        def kill_after_the_first_batch():
            while not finished.is_set():
                try:
                    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
                    stored = db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
                    db.close()
                except sqlite3.Error:
                    stored = 0
                if stored >= 8:  # one batch in: both workers still hold queued batches
                    os.kill(victim, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_after_the_first_batch)
        killer.start()
        config = LabelRunConfig(data="bbc-news:test", scoring=scoring, store=str(store), limit=N, commit_every=8,
                                backend="ray")
        try:
            summary = label_texts(config, teacher_factory=lambda s, c: pool, progress=False)
        finally:
            finished.set()
            killer.join()
        assert killed.is_set(), "the run ended before the worker could be killed"
        assert summary.labelled == N and summary.retried_batches >= 1
        assert_same(read_store(store), local_rows)  # every text once, the same numbers
        assert pool.pids()[0] != victim  # Ray restarted the dead worker (it reloaded its teacher)
    finally:
        pool.close()


def test_a_worker_that_cannot_load_the_teacher_is_one_line_and_writes_nothing(tmp_path, cluster, scoring):
    from llkd_edge.teacher.ray_pool import RayTeacherPool

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(UserError, match=r"Ray worker 0 \(node .*\): .*broken.gguf: not a GGUF file"):
        RayTeacherPool(scoring, TeacherConfig(model=str(bad)), RayConfig(workers=2), progress=False)
    with pytest.raises(UserError, match="need 3 CPUs but the Ray cluster has 2"):
        RayTeacherPool(scoring, TeacherConfig(), RayConfig(workers=3), progress=False)


def test_distill_labels_its_pool_and_eval_texts_through_the_ray_backend(tmp_path, cluster, scoring, local_rows):
    """`distill --backend ray`: the teacher opened through the registry on Ray, the labels the local backend's,
    and the pool of workers let go before the student trains."""
    import pandas as pd

    from llkd_edge.config import DistillConfig, TrainConfig
    from llkd_edge.student.distill import distill

    test = load_builtin("bbc-news:test")
    held = tmp_path / "eval.csv"  # the 16 texts after the pool's 48, with their gold labels
    pd.DataFrame({"text": test.texts[48:N], "label": test.gold[48:N]}).to_csv(held, index=False)
    store = tmp_path / "labels.sqlite"
    metrics = distill(DistillConfig(
        data="bbc-news:test", limit=48, eval=str(held), out=str(tmp_path / "run"), scoring=scoring, store=str(store),
        teacher=TeacherConfig(n_threads=1), backend="ray", ray=RayConfig(workers=2), min_per_class=1, relabel=None,
        train=TrainConfig(student="tiny", epochs=1, threads=2)), progress=False)
    assert metrics["labelled_now"] == {"pool": 48, "eval": 16}
    assert metrics["teacher"]["n"] == 16 and metrics["student"] is not None
    assert_same(read_store(store), local_rows)  # every text, one row each, the local backend's distributions
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["config"]["backend"] == "ray" and run["teacher"]["label_tokens"]
    assert ray.is_initialized()  # the cluster it joined is left running; only its own actors were let go
