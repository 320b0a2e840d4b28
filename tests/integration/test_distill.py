"""`llkd-edge distill` with the real Gemma teacher and the real pretrained MiniLM (2 layers kept)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from llkd_edge.cli import main


SLICE = ["--limit", "240", "--eval-limit", "100", "--max-text-tokens", "64", "--student", "minilm-l2",
         "--max-length", "96", "--batch-size", "16", "--epochs", "3"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("store") / "labels.sqlite")


def distill(args):
    result = CliRunner().invoke(main, ["distill", "bbc-news", *args])
    assert result.exit_code == 0, result.output
    return result


def test_student_beats_the_majority_class_and_the_run_dir_is_complete(tmp_path, store):
    out = tmp_path / "run"
    distill([*SLICE, "--prompt", "auto", "--store", store, "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    student, teacher = metrics["student"], metrics["teacher"]
    print(f"\nminilm-l2 + llkd on 240 BBC texts: student acc {student['accuracy']} F1 {student['macro_f1']}; "
          f"teacher acc {teacher['accuracy']} F1 {teacher['macro_f1']}; majority {student['majority_rate']}; "
          f"pool used {metrics['selection']['fraction_used']}")
    assert student["n"] == teacher["n"] == 100  # the same eval texts for both
    assert student["accuracy"] >= student["majority_rate"] + 0.25
    assert metrics["selection"]["method"] == "llkd"
    import torch

    on_gpu = torch.cuda.is_available()  # --device auto: where it trained, and how, is on record
    assert metrics["student_model"]["device"] == ("cuda" if on_gpu else "cpu")
    assert metrics["student_model"]["precision"] in (("bf16 autocast", "fp32") if on_gpu else ("fp32",))
    assert len(metrics["selection"]["selected_per_epoch"]) == 3
    assert 0 < metrics["selection"]["fraction_used"] <= 1
    assert metrics["data"]["pool_size"] == 240 and metrics["data"]["labels"][0] == "business"
    assert set(metrics["seconds"]) >= {"label", "train", "eval"}

    epochs = json.loads((out / "selection.json").read_text())
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert len(epochs[0]["teacher_thresholds"]) == 5 and len(epochs[0]["student_thresholds"]) == 5
    assert epochs[-1]["ever_selected"] == round(metrics["selection"]["fraction_used"] * 240)

    config = json.loads((out / "config.json").read_text())
    assert config["teacher"]["sha256"].startswith("a5fd3b62")
    # --prompt auto: the prompt was chosen on the pool (eval texts excluded), and the run records the winner
    # for export, evolve and bench to ask with
    choice = metrics["prompt_choice"]
    assert len(choice["ranking"]) == 12 and choice["sample"] == 12
    best = choice["ranking"][0]
    assert (config["config"]["scoring"]["task"], config["config"]["scoring"]["answer_cue"]) == (best["task"], best["cue"])
    assert config["teacher"]["prompt"].endswith(best["cue"])
    assert config["identity"]["prompt"] == "auto"
    assert set(metrics["teacher_health"]) >= {"answer_information", "mean_confidence", "top_label_share"}
    assert config["config"]["train"]["selection"] == "llkd" and config["config"]["train"]["seed"] == 0
    assert config["versions"]["torch"].startswith("2.13.0")

    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert model.config.num_hidden_layers == 2 and model.config.id2label[0] == "business"
    assert (out / "student" / "tokenizer.json").exists()

    again = CliRunner().invoke(main, ["distill", "bbc-news", *SLICE, "--prompt", "auto", "--store", store, "--out", str(out)])
    assert again.exit_code == 2 and "already holds this finished run" in again.output


def test_a_killed_run_resumes_to_where_an_uninterrupted_one_ends(tmp_path, store):
    args = [*SLICE, "--selection", "random", "--store", store]
    straight = tmp_path / "straight"
    distill([*args, "--out", str(straight)])

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, "-m", "llkd_edge.cli", "distill", "bbc-news", *args, "--out", str(resumed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (resumed / "checkpoint.pt").exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "metrics.json").exists()

    refused = CliRunner().invoke(main, ["distill", "bbc-news", *args, "--out", str(resumed)])
    assert refused.exit_code == 2 and "--resume" in refused.output
    distill([*args, "--out", str(resumed), "--resume"])

    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert a["student"] == b["student"]
    assert a["selection"]["selected_per_epoch"] == b["selection"]["selected_per_epoch"]
    from safetensors.numpy import load_file

    wa, wb = load_file(straight / "student" / "model.safetensors"), load_file(resumed / "student" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-5


def test_too_few_texts_per_class_is_refused(tmp_path, store):
    result = CliRunner().invoke(main, ["distill", "bbc-news", *SLICE[:2], "--limit", "12", "--store", store,
                                       "--max-text-tokens", "64", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "too few texts per class" in errors[0]  # progress notes may precede it
    assert "Traceback" not in result.output


def test_a_store_made_with_other_labels_is_refused(tmp_path, store):
    result = CliRunner().invoke(main, ["distill", store, "--labels", "sport,politics", "--max-text-tokens", "64",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "made with other labels or another teacher" in errors[0]


# No --task: the prompt is the one the store's rows were chosen with (the earlier bbc-news runs' choice)
STORE_ARGS = ["--labels", "business,entertainment,politics,sports=sport,tech=technology",
              "--max-text-tokens", "64", "--student", "minilm-l2",
              "--max-length", "96", "--batch-size", "16", "--epochs", "1", "--selection", "all"]


def test_training_from_an_existing_store(tmp_path, store):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["distill", store, *STORE_ARGS, "--eval", "bbc-news:test", "--eval-limit", "100",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled_now"] == {"pool": 0, "eval": 0}  # everything came from the store
    # the store also holds the 100 eval texts (labelled for the teacher's score); they are never trained on
    assert metrics["data"]["pool_size"] == 240
    assert metrics["data"]["store_rows_left_out"]["eval"] == 100

    # The same store as DATA with no eval set at all: its eval texts still stay out of training.
    bare = tmp_path / "bare"
    # (and, by default, --relabel probe: the pool's labels checked against a cross-fitted probe before training)
    result = CliRunner().invoke(main, ["distill", store, *STORE_ARGS, "--out", str(bare)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((bare / "metrics.json").read_text())
    assert metrics["data"]["pool_size"] == 240 and metrics["data"]["store_rows_left_out"]["eval"] == 100
    assert "left out 100 eval texts" in result.output
    assert metrics["relabel"]["method"] == "probe" and 0 < metrics["relabel"]["changed"] < 0.5
    assert "relabel: the probe changed" in result.output
    # The run reads back the labels its student learnt (evolve retrains on them): the teacher's where the probe
    # agreed, the probe-corrected ones where it overruled them, as many as metrics.json says it changed.
    from llkd_edge.student.runs import open_run

    run = open_run(bare)
    teacher_rows, learnt = run.pool(), run.pool(relabelled=True)
    assert [r.text for r in teacher_rows] == [r.text for r in learnt]
    changed = np.mean([a.label != b.label for a, b in zip(teacher_rows, learnt)])
    assert changed == pytest.approx(metrics["relabel"]["changed"], abs=1e-3)
    # --relabel none: the teacher's labels as they are, and nothing to read back but them
    plain = tmp_path / "plain"
    result = CliRunner().invoke(main, ["distill", store, *STORE_ARGS, "--relabel", "none", "--out", str(plain)])
    assert result.exit_code == 0, result.output
    assert json.loads((plain / "metrics.json").read_text())["relabel"] is None
    assert [r.probs for r in open_run(plain).pool(relabelled=True)] == [r.probs for r in teacher_rows]


def test_the_signal_test_is_recorded_and_decides_the_probe_on_a_teacher_at_chance(tmp_path):
    """election-tweets (who wrote the tweet): the default teacher is at chance against the gold labels and unsure
    (answer information ~0.06, under the 0.10 line that used to skip the probe and call it chance). Its labels
    still follow the texts (it says "Trump" where a tweet is about Trump, whoever wrote it): the signal test finds
    that, so no chance warning, and the probe reproduces them well enough to be used (bench/RESULTS.md, "Signal or
    chance"). A consistently wrong teacher is the case no label-free test can flag."""
    from llkd_edge.config import RELABEL_MIN_KAPPA
    from llkd_edge.labels.signal import MIN_Z

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["distill", "election-tweets", "--limit", "600", "--eval-limit", "20",
                                       "--max-text-tokens", "64", "--student", "minilm-l2", "--max-length", "64",
                                       "--epochs", "1", "--store", str(tmp_path / "labels.sqlite"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    health = metrics["teacher_health"]
    signal = health["signal"]
    assert health["answer_information"] < 0.10
    assert signal["n"] == metrics["data"]["pool_size"] and signal["signal"] and signal["z"] >= MIN_Z
    assert "no better than chance" not in result.output
    assert signal["kappa"] >= RELABEL_MIN_KAPPA
    assert metrics["relabel"]["method"] == "probe" and (out / "relabelled.npz").exists()
    assert "not checked by the probe" not in result.output


def test_variants_of_eval_texts_never_reach_training_and_paths_are_recorded_resolved(tmp_path, store, monkeypatch):
    """An eval file holding whitespace/case variants of pool texts: every one of them leaves the pool. The run
    records absolute paths, so it reads its eval set back from any directory."""
    import pandas as pd

    from llkd_edge.data import load_builtin
    from llkd_edge.student.runs import open_run

    train = load_builtin("bbc-news:train").head(240)
    variants = ["  " + t.upper().replace(" ", "  \n", 3) + " " for t in train.texts[:10]]
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"text": variants, "label": train.gold[:10]}).to_csv("eval.csv", index=False)
    result = CliRunner().invoke(main, ["distill", "bbc-news", *SLICE[:2], "--max-text-tokens", "64", "--student",
                                       "minilm-l2", "--max-length", "64", "--epochs", "1", "--selection", "all",
                                       "--eval", "eval.csv", "--store", store, "--out", "run"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["pool_texts_dropped_as_eval_overlap"] == 10 and metrics["data"]["pool_size"] == 230
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["eval"] == str(tmp_path / "eval.csv") and config["store"] == store

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = open_run(tmp_path / "run")
    assert run.eval_set().texts == variants and len(run.pool()) == 230


def test_batch_pool_calibration_divides_the_pools_mean_out_of_every_teacher_row(tmp_path, store):
    from llkd_edge.distributions import batch_calibrated
    from llkd_edge.labels.labelling import recalibrated
    from llkd_edge.student.runs import open_run
    from llkd_edge.store import LabelStore

    out = tmp_path / "batch"
    args = [*SLICE[:-2], "--epochs", "1", "--selection", "all", "--store", store, "--out", str(out)]
    printed = distill([*args, "--pool-calibration", "batch"]).output
    metrics = json.loads((out / "metrics.json").read_text())
    cal = metrics["pool_calibration"]
    run = open_run(out)
    with LabelStore(store) as opened:
        stored = opened.rows(run.key)
    read_back = run.pool()
    pool_rows = [stored[h] for h in stored if stored[h].text in {r.text for r in read_back}]  # the 240 pool texts
    assert len(pool_rows) == metrics["data"]["pool_size"] == 240
    prior = np.array([r.probs for r in pool_rows]).mean(axis=0)
    assert cal["method"] == "batch" and np.allclose(cal["prior"], prior, atol=1e-6) and sum(cal["prior"]) == pytest.approx(1, abs=1e-5)
    # The student learned the recalibrated labels: the run reads its pool back the same way.
    by_text = {r.text: r for r in recalibrated(pool_rows, run.labels, prior)}
    assert all(r.label == by_text[r.text].label for r in read_back)
    as_stored = {r.text: r.probs for r in pool_rows}
    assert np.allclose([r.probs for r in read_back],
                       batch_calibrated(np.array([as_stored[r.text] for r in read_back]), prior), atol=1e-5)
    changed = sum(r.label != by_text[r.text].label for r in pool_rows)
    print(f"\nbatch calibration on 240 BBC pool texts: prior {np.round(prior, 3).tolist()}, {changed} pseudo-labels changed; "
          f"teacher macro-F1 {cal['teacher_as_stored']['macro_f1']} as stored -> {metrics['teacher']['macro_f1']}")
    assert changed > 0 and metrics["teacher"] != cal["teacher_as_stored"]
    assert "before pool calibration" in printed
    # Without it, the teacher is scored as stored: the same figures as the calibrated run's 'as stored'.
    plain = tmp_path / "plain"
    # (--min-per-class 1: uncalibrated, the chosen prompt may name a class only a few times, which is the point)
    distill([*args[:-1], str(plain), "--pool-calibration", "none", "--min-per-class", "1"])
    m = json.loads((plain / "metrics.json").read_text())
    assert m["pool_calibration"]["prior"] is None and m["teacher"] == cal["teacher_as_stored"]


def test_gold_texts_judge_the_teacher_correct_its_labels_and_train_as_trusted_samples(tmp_path, store):
    """--gold with 4 texts per class (2 of them also in the pool): the teacher, the gold-only probe and their
    product are judged on them; the gold texts train in every epoch and leave the teacher-labelled pool."""
    import pandas as pd

    from llkd_edge.data import load_builtin
    from llkd_edge.student.runs import open_run
    from llkd_edge.student.checkpoint import selected_mask

    train = load_builtin("bbc-news:train")
    outside = range(240, 600)
    rows = []
    for name in ("business", "entertainment", "politics", "sports", "tech"):
        rows += [i for i in outside if train.gold[i] == name][:4]
    rows = [0, 1] + rows[2:]  # two pool texts among them
    gold = tmp_path / "gold.csv"
    pd.DataFrame({"text": [train.texts[i] for i in rows], "label": [train.gold[i] for i in rows]}).to_csv(gold, index=False)
    out = tmp_path / "run"
    result = distill([*SLICE, "--store", store, "--gold", str(gold), "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    g = metrics["gold"]
    print(f"\n--gold 20 texts: {g['why']}; student {metrics['student']['macro_f1']}, teacher "
          f"{metrics['teacher']['macro_f1']}, gold-only {metrics['gold_only']['macro_f1']}, taught "
          f"{metrics['taught_labels']['macro_f1']}")
    assert g["n"] == 20 and set(g["scores"]) == {"teacher", "gold_only", "combined"}
    assert g["chosen"] in g["scores"] and g["chosen"] in g["why"] and g["sha256"]
    assert all(0 <= s["interval"][0] <= s["accuracy"] <= s["interval"][1] <= 1 for s in g["scores"].values())
    assert "on your 20 gold texts:" in result.output and "gold-only" in result.output
    versus = g["encoder_on_gold"]  # the encoder teacher and its pool with the teacher on the same gold texts
    print(f"encoder teacher on the gold texts: {versus}")
    assert versus["n"] == 20 and versus["teacher_name"] == "gemma3-270m"
    assert versus["best"] == max((c for c in ("teacher", "encoder", "pool")  # the likeliest of those as accurate
                                  if versus[c]["accuracy"] >= versus["teacher"]["accuracy"]),
                                 key=lambda c: versus[c]["log_likelihood"])
    assert ("try another teacher:" in result.output) == (versus["best"] != "teacher")
    data = metrics["data"]
    assert data["pool_texts_dropped_as_gold"] == 2 and data["pool_size"] == 238 and data["gold_size"] == 20
    assert metrics["gold_only"]["n"] == metrics["taught_labels"]["n"] == metrics["student"]["n"] == 100
    assert metrics["student"]["accuracy"] >= metrics["student"]["majority_rate"] + 0.25
    assert selected_mask(out)[-20:].all()  # the gold samples, last in the training pool, always trained
    run = open_run(out)  # export/evolve read back the teacher-labelled pool alone
    assert len(run.pool()) == 238


def test_a_label_budget_labels_the_picked_share_and_a_larger_budget_pays_only_for_the_rest(tmp_path):
    # A fresh store, so every teacher call is counted: 120 pool texts, rounds of 30 (0.25), budget 60 then 90.
    store = str(tmp_path / "labels.sqlite")
    small = ["--limit", "120", "--eval-limit", "20", "--max-text-tokens", "64", "--student", "minilm-l2",
             "--max-length", "48", "--batch-size", "16", "--epochs", "1", "--min-per-class", "1",
             "--label-step", "0.25", "--store", store]
    first = distill([*small, "--label-budget", "0.5", "--out", str(tmp_path / "half")])
    m = json.loads((tmp_path / "half" / "metrics.json").read_text())
    b = m["label_budget"]
    assert (b["pool_texts"], b["texts_labelled"], b["step_texts"], b["strategy"]) == (120, 60, 30, "random")
    assert [r["picked"] for r in b["rounds"]] == [30, 30] and b["teacher_calls"] == 60
    assert m["data"]["pool_size"] == 60 and m["labelled_now"]["pool"] == 60
    assert (tmp_path / "labels.embeddings.npz").exists()  # beside the store, read again by the next run
    assert "label budget: the teacher labelled 60 of 120 pool texts in 2 rounds" in first.output

    from llkd_edge.store import LabelStore

    with LabelStore(store, existing=True) as s:
        roles = list(s.roles().values())
    assert sum("pool" in r for r in roles) == 60  # the other 60 texts never reached the teacher, nor the store

    from llkd_edge.student.runs import open_run
    from llkd_edge.student.checkpoint import selected_mask

    # the same rounds first, from the store; only the third round costs teacher calls. --no-fill-rest: the
    # student learns the teacher's 90 labels alone
    distill([*small, "--label-budget", "90", "--no-fill-rest", "--out", str(tmp_path / "more")])
    m2 = json.loads((tmp_path / "more" / "metrics.json").read_text())
    b2 = m2["label_budget"]
    assert [r["teacher_calls"] for r in b2["rounds"]] == [0, 0, 30] and b2["texts_labelled"] == 90
    assert not b2["fill_rest"] and not m2["data"].get("filled_size") and len(selected_mask(tmp_path / "more")) == 90

    # the fill (on by default, as in the first run): the budget's 60 texts from the store, the other 60 labelled
    # by the rounds' probe; the student learns all 120, the store and the run's read-back pool hold the teacher's 60
    assert b["fill_rest"] and m["data"]["filled_size"] == 60
    filled = distill([*small, "--label-budget", "0.5", "--fill-rest", "--out", str(tmp_path / "filled")])
    m3 = json.loads((tmp_path / "filled" / "metrics.json").read_text())
    b3 = m3["label_budget"]
    assert b3["teacher_calls"] == 0 and b3["fill_rest"] and b3["texts_filled"] == 60
    assert 0.5 < b3["filled_labels_right"] <= 1  # bbc-news's gold labels: the probe is right on most
    assert m3["data"]["pool_size"] == 60 and m3["data"]["filled_size"] == 60 and m3["data"]["gold_size"] == 0
    assert len(selected_mask(tmp_path / "filled")) == 120
    assert "the student also learnt 60 texts the teacher never saw" in filled.output
    with LabelStore(store, existing=True) as s:
        assert sum("pool" in r for r in s.roles().values()) == 90
    # read back as trained: the teacher's 60 in the rounds' pick order, then the probe's 60 with the distributions
    # the student learnt (evolve retrains on both and validates on neither)
    run = open_run(tmp_path / "filled")
    pool, (filled_texts, filled_probs) = run.pool(), run.filled()
    picks = json.loads((tmp_path / "filled" / "budget_picks.json").read_text())
    from llkd_edge.store import text_hash

    assert [text_hash(r.text) for r in pool] == picks["text_sha256"]
    assert [text_hash(t) for t in filled_texts] == picks["filled"]["text_sha256"] and len(filled_texts) == 60
    assert filled_probs.shape == (60, 5) and not {r.text for r in pool} & set(filled_texts)

    # an option that needs the budget is refused without it, before any teacher time
    bad = CliRunner().invoke(main, ["distill", "bbc-news", *small, "--label-strategy", "random", "--out",
                                    str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--label-budget" in bad.output and "Traceback" not in bad.output


def test_a_budget_run_killed_in_its_rounds_asks_the_teacher_for_no_text_twice(tmp_path):
    """SIGKILL between rounds: the re-run reads the killed run's labels from the store, asks the teacher only
    for the rest of the budget, and picks exactly what an uninterrupted run picks."""
    import sqlite3

    def args(store, out):
        return ["distill", "bbc-news", "--limit", "120", "--eval-limit", "20", "--max-text-tokens", "64",
                "--student", "minilm-l2", "--max-length", "48", "--batch-size", "16", "--epochs", "1",
                "--min-per-class", "1", "--label-step", "0.25", "--label-budget", "90", "--no-fill-rest",
                "--store", str(store), "--out", str(out)]

    def rows(store):  # teacher labels in the store (the roles table marks a round's texts before it asks)
        db = sqlite3.connect(store)
        try:
            return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0
        finally:
            db.close()

    straight = tmp_path / "straight"
    distill(args(tmp_path / "straight.sqlite", straight)[2:])
    paid = rows(tmp_path / "straight.sqlite")
    assert paid == 90 + 20  # the budget and the eval texts

    store, killed = tmp_path / "labels.sqlite", tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "llkd_edge.cli", *args(store, killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (store.exists() and rows(store) >= 40):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = rows(store)
    assert 40 <= saved < paid and not (killed / "metrics.json").exists()

    distill(args(store, killed)[2:])  # the same command: the run folder stays empty until labelling is done
    m = json.loads((killed / "metrics.json").read_text())
    assert m["label_budget"]["texts_labelled"] == 90
    assert sum(m["labelled_now"].values()) == paid - saved  # nothing the killed run paid for is asked again
    assert rows(store) == paid
    a = json.loads((straight / "metrics.json").read_text())["label_budget"]
    assert [r["picked"] for r in m["label_budget"]["rounds"]] == [r["picked"] for r in a["rounds"]] == [30, 30, 30]
    assert json.loads((killed / "budget_picks.json").read_text()) == json.loads((straight / "budget_picks.json").read_text())


def test_few_shot_demonstrations_never_train_with_the_label_their_own_prompt_gave_them(tmp_path):
    """A pool text that is also a --few-shot example (in any case/whitespace variant) leaves the pool: the
    teacher saw its answer in the prompt. Reading the run back drops it the same way."""
    import pandas as pd

    from llkd_edge.data import load_builtin
    from llkd_edge.student.runs import open_run

    train = load_builtin("bbc-news:train").head(60)
    shots = tmp_path / "shots.csv"
    pd.DataFrame({"text": [" " + t.upper() for t in train.texts[:3]], "label": train.gold[:3]}).to_csv(shots, index=False)
    distill(["--limit", "60", "--eval-limit", "20", "--max-text-tokens", "32", "--student", "minilm-l2",
             "--max-length", "64", "--epochs", "1", "--selection", "all", "--min-per-class", "1",
             "--few-shot", str(shots), "--store", str(tmp_path / "labels.sqlite"), "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["pool_texts_dropped_as_few_shot"] == 3 and metrics["data"]["pool_size"] == 57
    assert len(open_run(tmp_path / "run").pool()) == 57


def test_an_ensemble_teaches_through_the_store_and_its_run_reads_the_pooled_pool_back(tmp_path):
    """distill --teacher a,b: each member labels into the store; the student learns their pooled (then
    pool-calibrated) rows; the run reads that pool back from the members' rows (Run.pool, as export and evolve
    do); and the store alone, as DATA, trains on the same pooled rows without asking any teacher."""
    from llkd_edge.distributions import batch_calibrated
    from llkd_edge.teacher.ensemble import log_linear_pool
    from llkd_edge.student.runs import open_run
    from llkd_edge.store import LabelStore, ScoringKey

    store, out, again = tmp_path / "labels.sqlite", tmp_path / "run", tmp_path / "again"
    members = ["gemma3-270m", "smollm2-135m-instruct"]
    common = ["--teacher", ",".join(members), "--max-text-tokens", "48", "--student", "minilm-l2", "--max-length", "48",
              "--epochs", "1", "--min-per-class", "1", "--prompt", "fixed", "--store", str(store)]
    result = CliRunner().invoke(main, ["distill", "election-tweets", "--limit", "40", "--eval-limit", "20", *common,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    teacher = json.loads((out / "config.json").read_text())["teacher"]
    assert teacher["name"] == "+".join(members) and [m["name"] for m in teacher["members"]] == members
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"] is not None and metrics["data"]["pool_size"] > 30

    rows = open_run(out).pool()
    assert len(rows) == metrics["data"]["pool_size"]
    with LabelStore(str(store), existing=True) as db:
        stored = [db.rows(ScoringKey(m["sha256"], m["config_hash"])) for m in teacher["members"]]
    by_text = [{r.text: np.array(r.probs) for r in part.values()} for part in stored]
    pooled = log_linear_pool([np.array([part[r.text] for r in rows]) for part in by_text])
    expected = batch_calibrated(pooled, np.array(metrics["pool_calibration"]["prior"]))
    assert np.allclose([r.probs for r in rows], expected, atol=1e-5)
    assert not np.allclose(pooled, np.array([by_text[0][r.text] for r in rows]), atol=1e-3)  # not one member's

    labels = "HillaryClinton=Clinton,realDonaldTrump=Trump"
    result = CliRunner().invoke(main, ["distill", str(store), "--labels", labels, "--task",
                                       "Who wrote this 2016 election tweet, Clinton or Trump?", *common, "--out", str(again)])
    assert result.exit_code == 0, result.output
    from_store = json.loads((again / "metrics.json").read_text())
    assert from_store["labelled_now"] == {"pool": 0, "eval": 0}
    assert from_store["data"]["pool_size"] == metrics["data"]["pool_size"]  # eval texts still left out
    assert from_store["pool_calibration"]["prior"] == metrics["pool_calibration"]["prior"]


def test_a_learning_curve_says_where_the_student_stands_and_a_resumed_run_keeps_it(tmp_path):
    """--learning-curve always (auto does the same where the student ends below its teacher): the static student is
    trained again on 25% and 50% of the pool and scored on the same eval texts; the record, the plot, the summary
    line and the model card carry it, and a resumed run reuses it rather than training again."""
    from llkd_edge.student.curve import SHARES

    out, model = tmp_path / "run", tmp_path / "model"
    args = ["distill", "election-tweets", "--limit", "200", "--eval-limit", "40", "--max-text-tokens", "64",
            "--student", "static", "--learning-curve", "always", "--store", str(tmp_path / "labels.sqlite"),
            "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    curve = metrics["learning_curve"]
    pool = metrics["data"]["pool_size"]
    assert [p["texts"] for p in curve["points"]] == [round(s * pool) for s in SHARES] + [pool]
    assert curve["points"][-1]["macro_f1"] == metrics["student"]["macro_f1"]
    assert curve["teacher_macro_f1"] == metrics["teacher"]["macro_f1"] and curve["verdict"]
    assert all((out / "curve" / f"p{round(s * 100)}" / "checkpoint.pt").exists() for s in SHARES)
    assert (out / "learning_curve.png").stat().st_size > 0
    assert "learning curve (student macro-F1 on the eval texts)" in result.output

    # resumed: the curve is read back, no subset is trained again
    stamp = (out / "curve" / "p25" / "checkpoint.pt").stat().st_mtime_ns
    (out / "metrics.json").unlink()
    again = CliRunner().invoke(main, args + ["--resume"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metrics.json").read_text())["learning_curve"] == curve
    assert (out / "curve" / "p25" / "checkpoint.pt").stat().st_mtime_ns == stamp

    exported = CliRunner().invoke(main, ["export", str(out), "--out", str(model)])
    assert exported.exit_code == 0, exported.output
    assert "Learning curve (the same student trained on part of the pool" in (model / "README.md").read_text()


def test_a_probe_head_starts_the_student_where_a_probe_of_its_own_features_stands(tmp_path, store):
    # With a learning rate too small to move any weight, the student answers as its head started: a probe of its own
    # (pretrained, frozen) features on the pool's labels beats a random head by far on the eval texts.
    still = [*SLICE, "--store", store, "--selection", "all", "--epochs", "1", "--learning-rate", "1e-12"]
    scores = {}
    for head in ("probe", "random"):
        distill([*still, "--head", head, "--out", str(tmp_path / head)])
        metrics = json.loads((tmp_path / head / "metrics.json").read_text())
        assert metrics["student_model"]["head"] == head
        scores[head] = metrics["student"]["macro_f1"]
    record = json.loads((tmp_path / "probe" / "metrics.json").read_text())["student_model"]["head_probe"]
    assert record["probe_fits_pool"] > 0.8
    assert scores["probe"] > scores["random"] + 0.3, scores
    # auto: the probe head here, where a probe follows the teacher's BBC labels; the run records the head it took
    from llkd_edge.config import RELABEL_MIN_KAPPA

    distill([*still, "--head", "auto", "--out", str(tmp_path / "auto")])
    auto = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert auto["teacher_health"]["signal"]["kappa"] >= RELABEL_MIN_KAPPA and auto["student_model"]["head"] == "probe"
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["config"]["train"]["head"] == "probe"
    assert auto["student"]["macro_f1"] > scores["random"] + 0.3
