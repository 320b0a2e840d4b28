"""`llkd-edge label` end to end with the real default teacher on real BBC News texts."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.config import LabelRunConfig, LabelSet
from llkd_edge.labels.labelling import label_texts
from llkd_edge.store import LabelStore



def invoke(args):
    result = CliRunner().invoke(main, args)
    return result


def store_counts(path):
    db = sqlite3.connect(path)
    try:
        total, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT text_hash || config_hash) FROM labels").fetchone()
    finally:
        db.close()
    return total, distinct


def test_teacher_beats_the_majority_class_on_100_bbc_test_texts_and_reruns_evaluate_nothing(tmp_path, gemma, bbc_test):
    store = tmp_path / "labels.sqlite"
    out = tmp_path / "labels.jsonl"
    result = invoke(["label", "bbc-news:test", "--limit", "100", "--prompt", "fixed", "--store", str(store), "--out",
                     str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["labelled"] == 100 and summary["cached"] == 0 and summary["skipped"] == 0
    assert summary["seconds"] > 0
    print(f"\nGemma 270M on 100 BBC test texts: accuracy {summary['accuracy']}, macro-F1 {summary['macro_f1']}, "
          f"majority class {summary['majority_rate']}")
    assert summary["accuracy"] >= summary["majority_rate"] + 0.25
    assert summary["macro_f1"] >= 0.5
    # the signal test (labels/signal.py): a probe on the texts predicts these labels far beyond shuffled ones
    signal = summary["health"]["signal"]
    assert signal["n"] == 100 and signal["signal"] and signal["kappa"] > 0.5, signal
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == 100
    assert list(exported[0]["probs"]) == list(LabelSet.parse(bbc_test.labels).names)
    assert [r["text"] for r in exported] == bbc_test.texts[:100]
    assert abs(sum(exported[0]["probs"].values()) - 1) < 1e-6

    # The same command again: everything cached, nothing sent to the model.
    result = invoke(["label", "bbc-news:test", "--limit", "100", "--prompt", "fixed", "--store", str(store), "--json"])
    assert len(result.stdout.strip().splitlines()) == 1  # --json: stdout is the JSON object alone
    again = json.loads(result.stdout)
    assert (again["labelled"], again["cached"]) == (0, 100)
    assert again["accuracy"] == summary["accuracy"]
    # A built-in test split is recorded as eval data: a later `distill STORE` never trains on it.
    assert summary["role"] == "eval"
    with LabelStore(store) as opened:
        key = opened.configs()[0]
        from llkd_edge.store import ScoringKey

        rows, left_out = opened.training_rows(ScoringKey(key["teacher_sha256"], key["config_hash"]))
    assert rows == [] and left_out["eval"] == 100

    # Through the library with an already loaded teacher (same prompt, but a 64-token budget, so a new
    # key): first run labels, second run performs zero teacher evaluations.
    config = LabelRunConfig(data="bbc-news:test", scoring=gemma.scoring, store=str(store), limit=10)
    label_texts(config, teacher_factory=lambda *_: gemma, progress=False)
    before = gemma.evaluations
    rerun = label_texts(config, teacher_factory=lambda *_: gemma, progress=False)
    assert gemma.evaluations == before
    assert (rerun.labelled, rerun.cached) == (0, 10)


def test_empty_and_repeated_texts_are_skipped_and_counted(tmp_path, gemma, bbc_test):
    texts = [bbc_test.texts[0], "", "   ", bbc_test.texts[1], bbc_test.texts[0]]
    gold = [bbc_test.gold[0], "", "", bbc_test.gold[1], bbc_test.gold[0]]
    pd.DataFrame({"body": texts, "topic": gold}).to_csv(tmp_path / "in.csv", index=False)
    config = LabelRunConfig(
        data=str(tmp_path / "in.csv"), scoring=gemma.scoring, store=str(tmp_path / "s.sqlite"),
        text_column="body", label_column="topic", out=str(tmp_path / "out.csv"),
    )
    summary = label_texts(config, teacher_factory=lambda *_: gemma, progress=False)
    assert (summary.total, summary.labelled, summary.skipped, summary.duplicates) == (5, 2, 2, 1)
    assert summary.gold_count == 2
    assert store_counts(tmp_path / "s.sqlite") == (2, 2)
    assert len(pd.read_csv(tmp_path / "out.csv")) == 2


def test_colliding_labels_exit_2_and_leave_the_store_alone(tmp_path, bbc_test):
    store = tmp_path / "labels.sqlite"
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(t.split()) for t in bbc_test.texts[:3]), encoding="utf-8")
    first = invoke(["label", str(texts), "--labels", "business,sport", "--max-text-tokens", "32", "--prompt", "fixed",
                    "--store", str(store)])
    assert first.exit_code == 0, first.output
    before = store_counts(store)
    assert before == (3, 3)
    result = invoke(["label", str(texts), "--store", str(store), "--labels", "pie=apple pie,juice=apple juice"])
    assert result.exit_code == 2
    assert result.output.startswith("error: labels 'pie' and 'juice' both start with the token")
    assert len(result.output.strip().splitlines()) == 1
    assert store_counts(store) == before


def test_a_run_killed_with_sigkill_resumes_with_nothing_lost_or_duplicated(tmp_path):
    store = tmp_path / "labels.sqlite"
    args = ["label", "bbc-news:test", "--limit", "60", "--max-text-tokens", "48", "--batch-size", "4",
            "--prompt", "fixed", "--store", str(store)]
    proc = subprocess.Popen([sys.executable, "-m", "llkd_edge.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    done_before_kill = 0
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                done_before_kill = store_counts(store)[0]
            except sqlite3.OperationalError:  # schema not created yet
                pass
        if done_before_kill >= 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; give it more texts"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = store_counts(store)[0]
    assert 12 <= saved < 60 and saved % 4 == 0  # whole batches only

    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cached"] == saved and summary["labelled"] == 60 - saved
    assert store_counts(store) == (60, 60)
    with LabelStore(store) as s:
        assert len(s.configs()) == 1


def test_prompt_auto_tries_each_candidate_once_keeps_the_most_informative_and_a_rerun_costs_nothing(tmp_path):
    from llkd_edge.data import load_builtin
    from llkd_edge.distributions import answer_information
    from llkd_edge.teacher.prompts import sample_texts

    store = tmp_path / "labels.sqlite"
    base = ["label", "bbc-news:train", "--limit", "40", "--max-text-tokens", "32", "--prompt-sample", "8",
            "--store", str(store), "--json"]
    args = [*base, "--prompt", "auto"]  # a built-in set brings a written task; a user's file would be auto already
    result = invoke(args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    choice = summary["prompt_choice"]
    ranking = choice["ranking"]
    print("\nprompt choice on 8 BBC texts:", [(r["name"], r["score"]) for r in ranking[:3]])
    assert len(ranking) == 12 and choice["sample"] == 8 and choice["evaluations"] == 12 * 8  # 4 wordings x 3 cues
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    assert len({(r["task"], r["cue"]) for r in ranking}) == 12
    # the winner labelled the texts, and its 8 sample rows were not asked for again
    best = ranking[0]
    assert best["task"].rstrip(".?!:") in summary["prompt"] and summary["prompt"].endswith(best["cue"])
    assert (summary["labelled"], summary["cached"]) == (32, 8)
    # its score is the answer information of its rows on the sample, as stored
    sample = {" ".join(t.split()) for t in sample_texts(load_builtin("bbc-news:train").texts[:40], 8)}
    db = sqlite3.connect(store)
    rows = [json.loads(p) for t, p in db.execute("SELECT text, probs FROM labels WHERE config_hash = ?",
                                                   (summary["config_hash"],)) if " ".join(t.split()) in sample]
    db.close()
    assert len(rows) == 8 and abs(answer_information(rows) - best["score"]) < 1e-3

    again = json.loads(invoke(args).stdout)  # the same choice from the store, no teacher call at all
    assert again["prompt_choice"]["evaluations"] == 0 and again["prompt_choice"]["ranking"] == ranking
    assert (again["labelled"], again["cached"]) == (0, 40) and again["config_hash"] == summary["config_hash"]
    given = json.loads(invoke([*base, "--task", "Sort these texts"]).stdout)  # a written prompt is used as given
    assert given["prompt_choice"] is None and "Sort these texts" in given["prompt"]
    builtin = json.loads(invoke(base).stdout)  # and so is a built-in dataset's own task
    assert builtin["prompt_choice"] is None and "Classify the news article by topic" in builtin["prompt"]


def test_gold_texts_give_the_teachers_accuracy_with_an_interval_and_are_held_out(tmp_path):
    from llkd_edge.data import load_builtin

    train = load_builtin("bbc-news:train")
    rows = [i for name in ("business", "entertainment", "politics", "sports", "tech")
            for i in [j for j in range(100, 400) if train.gold[j] == name][:2]]
    gold = tmp_path / "gold.csv"
    pd.DataFrame({"text": [train.texts[i] for i in rows], "label": [train.gold[i] for i in rows]}).to_csv(gold, index=False)
    store = tmp_path / "labels.sqlite"
    args = ["label", "bbc-news:train", "--limit", "20", "--max-text-tokens", "48", "--store", str(store), "--gold", str(gold)]
    summary = json.loads(invoke([*args, "--json"]).stdout)["gold"]
    print(f"\nteacher on 10 BBC gold texts: {summary}")
    assert summary["n"] == 10 and summary["correct"] == round(summary["accuracy"] * 10)
    assert summary["interval"][0] <= summary["accuracy"] <= summary["interval"][1]
    assert summary["interval"][1] - summary["interval"][0] > 0.2  # ten texts say little, and the interval says so
    assert set(summary["recall"]) == {"business", "entertainment", "politics", "sports", "tech"}
    assert "on your 10 gold texts: accuracy" in invoke(args).output
    # the encoder teacher and its pool with the teacher are scored on the same gold texts; the summary names the best
    versus = summary["encoder_on_gold"]
    assert versus["n"] == 10 and set(versus) == {"teacher_name", "teacher", "encoder", "pool", "n", "best"}
    assert versus["best"] == max((c for c in ("teacher", "encoder", "pool")  # the likeliest of those as accurate
                                  if versus[c]["accuracy"] >= versus["teacher"]["accuracy"]),
                                 key=lambda c: versus[c]["log_likelihood"])
    assert ("try another teacher:" in invoke(args).output) == (versus["best"] != "teacher")
    with LabelStore(str(store)) as opened:  # held out: a store used as distill DATA never trains on them
        roles = opened.roles()
    assert sum("validation" in r for r in roles.values()) == 10 and len(roles) == 30
    # --prompt auto with gold texts: the candidates are ranked by the (calibrated) log-likelihood of the right labels, the
    # gold texts are labelled as held out under every candidate, never sampled as pool
    chose = tmp_path / "chose.sqlite"
    auto = json.loads(invoke(["label", "bbc-news:train", "--limit", "20", "--max-text-tokens", "48", "--store",
                              str(chose), "--gold", str(gold), "--prompt", "auto", "--prompt-sample", "4",
                              "--json"]).stdout)
    choice = auto["prompt_choice"]
    print("prompt choice by gold log-likelihood:", [(r["name"], r["score"], r["gold_accuracy"]) for r in choice["ranking"][:3]])
    assert choice["gold"] == 10 and "log-likelihood of the right label on 10 gold texts" in choice["criterion"]
    assert choice["evaluations"] == 12 * (4 + 10)
    keys = [(r["score"], r["answer_information"]) for r in choice["ranking"]]
    assert keys == sorted(keys, reverse=True) and all(r["score"] == r["gold_log_likelihood"] < 0 for r in choice["ranking"])
    assert all(round(r["gold_accuracy"] * 10, 6) == round(r["gold_accuracy"] * 10) for r in choice["ranking"])  # k of 10
    assert auto["prompt"].endswith(choice["ranking"][0]["cue"])
    with LabelStore(str(chose)) as opened:
        roles = opened.roles()
    assert sum(r == {"validation"} for r in roles.values()) == 10 and len(roles) == 30
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nsome text,zebra\n", encoding="utf-8")
    result = invoke([*args[:-1], str(bad)])
    assert result.exit_code == 2 and "not in the label set" in result.output


def test_a_budget_labels_the_picked_share_lists_the_rest_and_a_larger_budget_pays_only_for_new_rounds(tmp_path):
    store, out = tmp_path / "labels.sqlite", tmp_path / "labels.csv"
    args = ["label", "bbc-news:train", "--limit", "60", "--max-text-tokens", "32", "--store", str(store),
            "--budget-step", "0.25", "--budget-strategy", "active", "--out", str(out), "--json"]  # rounds of 15
    first = json.loads(invoke([*args, "--budget", "0.5"]).stdout)
    b = first["budget"]
    assert (first["labelled"], b["texts_labelled"], b["teacher_calls"], b["left_unlabelled"]) == (30, 30, 30, 30)
    assert [r["teacher_calls"] for r in b["rounds"]] == [15, 15] and b["strategy"] == "active"
    labelled = pd.read_csv(out)["text"].tolist()
    unlabelled = (tmp_path / "labels.unlabelled.txt").read_text(encoding="utf-8").splitlines()
    assert len(labelled) == 30 and len(unlabelled) == 30
    everything = {" ".join(t.split()) for t in labelled} | set(unlabelled)
    assert len(everything) == 60  # every text either labelled or listed, none both
    assert store_counts(store) == (30, 30)
    more = json.loads(invoke([*args, "--budget", "45"]).stdout)["budget"]  # the same two rounds from the store
    assert [r["teacher_calls"] for r in more["rounds"]] == [0, 0, 15] and more["left_unlabelled"] == 15
    assert store_counts(store) == (45, 45)
    wrong = invoke(["label", "bbc-news:test", "--budget", "0.5", "--store", str(store)])
    assert wrong.exit_code == 2 and "labelled as eval texts" in wrong.output


def test_an_ensemble_stores_each_members_rows_pools_them_and_each_member_reuses_its_own(tmp_path):
    """--teacher a,b: every member's rows land in the store under its own key, the summary and --out carry their
    log-linear pool, a re-run asks nobody, and a member asked alone later finds its rows already paid for."""
    import numpy as np

    from llkd_edge.teacher.ensemble import log_linear_pool

    store, out = tmp_path / "labels.sqlite", tmp_path / "pooled.jsonl"
    both = ["label", "election-tweets:test", "--limit", "6", "--prompt", "fixed", "--store", str(store), "--json"]
    result = invoke(both + ["--teacher", "gemma3-270m,smollm2-135m-instruct", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["teacher"] == "gemma3-270m+smollm2-135m-instruct"
    assert (summary["labelled"], summary["cached"]) == (6, 0)
    db = sqlite3.connect(store)
    try:
        per_member = dict(db.execute("SELECT c.teacher_name, COUNT(*) FROM labels l JOIN configs c "
                                     "USING (config_hash) GROUP BY c.teacher_name").fetchall())
        member_probs = {name: {text: json.loads(p) for text, p in db.execute(
            "SELECT l.text, l.probs FROM labels l JOIN configs c USING (config_hash) WHERE c.teacher_name = ?", (name,))}
            for name in per_member}
    finally:
        db.close()
    assert per_member == {"gemma3-270m": 6, "smollm2-135m-instruct": 6}
    pooled = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pooled) == 6
    names = list(pooled[0]["probs"])
    for r in pooled:  # the exported distribution is the members' stored rows, pooled
        expected = log_linear_pool([np.array([member_probs[m][r["text"]]]) for m in ("gemma3-270m", "smollm2-135m-instruct")])
        assert np.allclose([r["probs"][n] for n in names], expected[0], atol=1e-6)
    assert sum(member_probs["gemma3-270m"][r["text"]] != member_probs["smollm2-135m-instruct"][r["text"]]
               for r in pooled) == 6  # two different teachers, not one row twice

    again = json.loads(invoke(both + ["--teacher", "gemma3-270m,smollm2-135m-instruct"]).stdout)
    assert (again["labelled"], again["cached"]) == (0, 6)
    alone = json.loads(invoke(both + ["--teacher", "smollm2-135m-instruct"]).stdout)
    assert (alone["labelled"], alone["cached"]) == (0, 6)

    bad = invoke(both + ["--teacher", "gemma3-270m,gemma3-270m"])
    assert bad.exit_code != 0 and "distinct" in bad.output and "Traceback" not in bad.output
    missing = invoke(both + ["--teacher", "gemma3-270m,no-such-teacher"])
    assert missing.exit_code != 0 and "unknown teacher 'no-such-teacher'" in missing.output
