"""The served teacher (``--teacher openai:URL``) against real OpenAI-compatible servers on loopback:
llama-cpp-python's own server (``python -m llama_cpp.server``) serving the packaged Gemma and SmolLM2 files.
Only the bad-server cases that no real server produces on demand (an HTML page, an answer without log-probs or
without the label words) are played by a tiny stand-in server: what is under test there is our handling."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.config import TeacherConfig
from llkd_edge.store import LabelStore
from tests.support import one_error_line

KEY = "llkd-edge-test-key"
ALIAS = "teacher"  # both servers serve their model under this name: the swap test needs the same name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(gguf, log_path, *extra):
    """llama-cpp-python's OpenAI-compatible server for ``gguf`` on a free loopback port, once it answers:
    (the process, its /v1 base URL)."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 (the server writes to it until it stops)
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--logits_all", "true", "--n_threads", "1", "--n_ctx", "2048",
                             "--model_alias", ALIAS, "--api_key", KEY, *extra], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    request = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {KEY}"})
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(request, timeout=5)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"llama_cpp.server did not start: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.2)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def gemma_server(gemma_file, tmp_path_factory):
    proc, url = start_llama_server(gemma_file.path, tmp_path_factory.mktemp("server") / "gemma.log")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def smol_file():
    from llkd_edge.registry import resolve_teacher

    return resolve_teacher("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smol_server(smol_file, tmp_path_factory):
    """SmolLM2 served under the same name as Gemma: a server restarted with another model."""
    proc, url = start_llama_server(smol_file.path, tmp_path_factory.mktemp("server") / "smol.log")
    yield url
    stop(proc)


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv("LLKD_EDGE_API_KEY", KEY)


def label(args):
    return CliRunner().invoke(main, ["label", *args])


def configs(store):
    with LabelStore(store) as s:
        return s.configs()


def test_served_distributions_match_the_in_process_teachers_on_the_same_prompt(gemma_server, gemma, bbc_test, with_key):
    from llkd_edge.teacher.server import ServerTeacher

    served = ServerTeacher(f"openai:{gemma_server}", gemma.scoring, TeacherConfig(parallel=2))
    try:
        assert served.prompt == gemma.prompt
        assert served.model.name == f"openai:{gemma_server}#{ALIAS}"
        assert served.top_logprobs == 1000 and served.details["tokenizer"] == "//extras/tokenize"
        # the same tokens count for each label: the first tokens of its verbaliser's variants
        pieces = [sorted(gemma.llm.detokenize([t]).decode() for t in ids) for ids in gemma.label_tokens]
        assert [sorted(p) for p in served.label_tokens] == pieces
        texts = bbc_test.texts[:16]
        a, b = served.predict_proba(texts), gemma.predict_proba(texts)
        diff = np.abs(a - b)
        # llama.cpp evaluates the prompt in other chunks in the server than in process: float noise, no more
        assert diff.mean() < 0.02 and diff.max() < 0.15, (diff.mean(), diff.max())
        assert (a.argmax(1) == b.argmax(1)).sum() >= 14
        assert served.floored <= 3  # texts with a label outside the top 1000: rare, and counted
    finally:
        served.close()


def test_label_through_the_server_resumes_after_sigkill_with_nothing_lost_or_duplicated(gemma_server, tmp_path):
    store = tmp_path / "labels.sqlite"
    args = ["label", "bbc-news:test", "--limit", "24", "--max-text-tokens", "32", "--batch-size", "4", "--parallel", "2",
            "--prompt", "fixed", "--store", str(store), "--teacher", f"openai:{gemma_server}"]
    proc = subprocess.Popen([sys.executable, "-m", "llkd_edge.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "LLKD_EDGE_API_KEY": KEY})
    saved, deadline = 0, time.time() + 300
    while time.time() < deadline and proc.poll() is None and saved < 8:
        try:
            saved = count(store)[0]
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; give it more texts"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = count(store)[0]
    assert 8 <= saved < 24 and saved % 4 == 0  # whole batches only

    result = CliRunner(env={"LLKD_EDGE_API_KEY": KEY}).invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cached"] == saved and summary["labelled"] == 24 - saved
    assert summary["teacher"] == f"openai:{gemma_server}#{ALIAS}"
    assert count(store) == (24, 24)
    assert len(configs(store)) == 1
    details = json.loads(json.dumps(configs(store)[0]["details"]))
    assert details["server_model"] == ALIAS and len(details["fingerprint"]) == 5 and KEY not in json.dumps(details)


def count(store):
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT text_hash || config_hash) FROM labels").fetchone()
    finally:
        db.close()


def test_a_server_restarted_with_another_model_under_the_same_name_gets_a_new_key_and_a_warning(
        gemma_server, smol_server, tmp_path, with_key):
    store = tmp_path / "labels.sqlite"
    args = ["bbc-news:test", "--limit", "3", "--max-text-tokens", "32", "--prompt", "fixed", "--store", str(store),
            "--json"]
    first = label([*args, "--teacher", f"openai:{gemma_server}"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["warnings"] == []
    second = label([*args, "--teacher", f"openai:{smol_server}"])
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["labelled"] == 3 and summary["cached"] == 0  # nothing of Gemma's reused
    assert any("is not the teacher of that name" in w for w in summary["warnings"])
    assert len({c["teacher_sha256"] for c in configs(store)}) == 2
    assert {c["teacher_name"].rsplit("#")[-1] for c in configs(store)} == {ALIAS}


def test_through_the_chat_api_a_chat_model_answers_as_it_does_in_process_through_its_template(
        smol_server, smol_file, bbc_test, with_key):
    from llkd_edge.config import LabelSet, ScoringConfig
    from llkd_edge.teacher.llama import Teacher
    from llkd_edge.teacher.server import ServerTeacher

    scoring = ScoringConfig(labels=LabelSet.parse(bbc_test.labels), task=bbc_test.task, max_text_tokens=48)
    served = ServerTeacher(f"openai-chat:{smol_server}", scoring, TeacherConfig(parallel=2))
    local = Teacher(smol_file, scoring, TeacherConfig(n_threads=1))
    try:
        assert served.prompt_style == local.prompt_style == "chat"
        a, b = served.predict_proba(bbc_test.texts[:8]), local.predict_proba(bbc_test.texts[:8])
        # the server renders the model's chat template around the same message as we do in process
        assert np.abs(a - b).max() < 0.05 and (a.argmax(1) == b.argmax(1)).all()
    finally:
        served.close()
        local.close()


def test_distill_through_the_server_records_the_served_teacher(gemma_server, tmp_path, with_key):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "distill", "bbc-news", "--limit", "32", "--eval-limit", "12", "--max-text-tokens", "32", "--min-per-class", "2",
        "--student", "minilm-l2", "--max-length", "64", "--batch-size", "16", "--epochs", "1", "--prompt", "fixed",
        "--teacher", f"openai:{gemma_server}", "--store", str(tmp_path / "labels.sqlite"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"]["n"] == metrics["student"]["n"] == 12
    made = json.loads((out / "config.json").read_text())
    assert made["teacher"]["name"] == f"openai:{gemma_server}#{ALIAS}" and made["config"]["teacher"]["parallel"] == 0
    assert KEY not in json.dumps(made) and KEY not in result.output


def test_an_ensemble_of_a_model_file_and_a_served_model_labels_each_under_its_own_key(gemma_server, tmp_path,
                                                                                      with_key):
    store = tmp_path / "labels.sqlite"
    result = label(["bbc-news:test", "--limit", "3", "--max-text-tokens", "32", "--prompt", "fixed", "--store",
                    str(store), "--teacher", f"gemma3-270m,openai:{gemma_server}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["labelled"] == 3
    assert sorted(c["teacher_name"] for c in configs(store)) == ["gemma3-270m", f"openai:{gemma_server}#{ALIAS}"]
    assert count(store) == (6, 6)


# ------------------------------------------------------------------------------------------ bad servers


class StandIn(BaseHTTPRequestHandler):
    """Answers every request with ``self.server.answer(path, JSON body or None) -> (status, content type, body)``."""

    def _reply(self):
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length)) if length else None
        status, kind, body = self.server.answer(self.path, sent)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, *args):
        pass


def stand_in(answer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.answer = answer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def openai_like(top_logprobs, at_most=None, fail_first=0):
    """A server without a tokenizer that lists one model and answers completions with ``top_logprobs`` (None: no
    log-probs): 400 when asked for more than ``at_most``, 503 to the first ``fail_first`` completions."""
    failures = [fail_first]

    def answer(path, sent):
        if path.endswith("/models"):
            return 200, "application/json", json.dumps({"data": [{"id": "m"}]}).encode()
        if path.endswith("/completions"):
            if at_most is not None and sent["logprobs"] > at_most:
                return 400, "application/json", b'{"error": "at most 20 logprobs"}'
            if failures[0] > 0:
                failures[0] -= 1
                return 503, "application/json", b'{"error": "busy"}'
            choice = {"text": " x", "logprobs": None if top_logprobs is None else {"top_logprobs": [top_logprobs]}}
            return 200, "application/json", json.dumps({"choices": [choice]}).encode()
        return 404, "application/json", b"{}"
    return answer


def test_without_a_tokenizer_tokens_count_for_the_label_they_spell_and_busy_answers_are_asked_again():
    from llkd_edge.config import LabelSet, ScoringConfig
    from llkd_edge.teacher.server import ServerTeacher

    top = {" Sport": -0.4, " sports": -2.0, " Bus": -2.5, "\n": -3.0, " t": -3.5}
    server, url = stand_in(openai_like(top, at_most=20, fail_first=2))
    scoring = ScoringConfig(labels=LabelSet.parse("business,sport,sports,tech"), calibrate=False)
    try:
        teacher = ServerTeacher(f"openai:{url}", scoring, TeacherConfig(parallel=2))
        try:
            assert teacher.top_logprobs == 20  # 1000 refused, 20 taken
            assert teacher.details["tokenizer"].startswith("none")
            row = teacher.score(["a text"])[0]
            lp = {name: np.log(p) for name, p in zip(scoring.labels.names, row.probs)}
            # " Sport" is sport's whole word, not sports'; " sports" is sports'; " Bus" starts only business;
            # " t" starts tech's words (and no other's); tech's own is as low as the lowest returned, the floor
            assert lp["sport"] - lp["sports"] == pytest.approx(1.6) and lp["sports"] - lp["business"] == pytest.approx(0.5)
            assert lp["business"] - lp["tech"] == pytest.approx(1.0)
            assert row.label_mass == pytest.approx(np.exp(-0.4) + np.exp(-2.0) + np.exp(-2.5) + np.exp(-3.5))
            assert teacher.retried_batches == 2 and teacher.floored == 0
        finally:
            teacher.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("case, message", [
    ("unreachable", "cannot reach the teacher server at"),
    ("wrong path", "not found (404); give the server's OpenAI base URL"),
    ("no key", "refused the request (401): set its API key in LLKD_EDGE_API_KEY"),
    ("not json", "answered with something that is not a JSON object (text/html)"),
    ("no log-probs", "returns no log-probs from /completions for 'm'"),
    ("no label tokens", "returns none of the label words' tokens"),
])
def test_a_bad_server_gets_one_line_before_the_store_is_touched(case, message, gemma_server, tmp_path, monkeypatch):
    store = tmp_path / "labels.sqlite"
    server = None
    if case == "unreachable":
        url = f"http://127.0.0.1:{free_port()}/v1"
    elif case == "wrong path":
        monkeypatch.setenv("LLKD_EDGE_API_KEY", KEY)
        url = gemma_server.removesuffix("/v1") + "/nope"
    elif case == "no key":
        monkeypatch.delenv("LLKD_EDGE_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        url = gemma_server
    elif case == "not json":
        server, url = stand_in(lambda path, sent: (200, "text/html", b"<html>hello</html>"))
    elif case == "no log-probs":
        server, url = stand_in(openai_like(None))
    else:
        server, url = stand_in(openai_like({"\n": -0.2, " the": -1.9, " a": -2.5}))
    try:
        result = label(["bbc-news:test", "--limit", "4", "--prompt", "fixed", "--store", str(store),
                        "--teacher", f"openai:{url}"])
    finally:
        if server:
            server.shutdown()
            server.server_close()
    one_error_line(result, message)
    if store.exists():  # the texts may be marked before any teacher time; no row is
        assert count(store) == (0, 0)
