"""`llkd-edge serve` against hostile clients, on a real exported model started as a user starts it: a bad text
fails alone, slow or oversized requests and idle connections are cut off in bounded time, a foreign Host header
is refused, nothing of the model folder's provenance (paths, distill config, teacher prompt) reaches a client,
and a fuzzer driven by the service's own OpenAPI schema finds no 5xx and no answer off the schema. And a text
gets the same answer whatever it is batched with, for every variant, in the runtime, `predict` and the service;
the page checks every file it takes from the CDN against its pinned hash (in a real Chromium)."""

import functools
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from llkd_edge.runtime import Classifier
from tests.support import start_service, stop_service

ROOT = Path(__file__).resolve().parents[2]
WEB_LIBS = ROOT / "examples" / "web" / "node_modules"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
READ_TIMEOUT = 2  # the services here cut slow clients off after this many seconds
GUARD = 60  # seconds any one exchange may take before the test fails instead of hanging


@dataclass
class Service:
    url: str
    port: int
    model_dir: Path
    proc: subprocess.Popen


def _start(model_dir: Path, *options: str) -> Service:
    proc, url, port = start_service(model_dir, "--threads", "1", "--max-texts", "64", "--max-body", "200000",
                                    "--read-timeout", str(READ_TIMEOUT), *options)
    return Service(url, port, model_dir, proc)


def _stop(service: Service) -> str:
    return stop_service(service.proc)


@pytest.fixture(scope="module")
def server(exported):
    """The exported folder's default variant (int8 when it passed the gate: the case where batching could move
    a text's answer)."""
    service = _start(exported[0])
    yield service
    assert "Traceback" not in _stop(service)


def _request(url: str, body: bytes | None = None, host: str | None = None):
    headers = {"content-type": "application/json", **({"host": host} if host else {})}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=GUARD) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _predict(url: str, texts: list[str]):
    status, body = _request(url + "/predict", json.dumps({"texts": texts}).encode())
    return status, json.loads(body)


def _probabilities(answer: dict, labels) -> np.ndarray:
    return np.array([[row[name] for name in labels] for row in answer["probabilities"]])


def _connect(service: Service) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=GUARD)


def _drip_until_answered(sock: socket.socket, head: bytes, drop: bytes, every: float = 0.2) -> tuple[bytes, float]:
    """Send ``head``, then ``drop`` every ``every`` seconds until the server answers or closes: (what it sent, seconds)."""
    started = time.monotonic()
    sock.sendall(head)
    while time.monotonic() - started < GUARD:
        try:
            sock.sendall(drop)
        except OSError:  # closed under us
            return b"", time.monotonic() - started
        sock.settimeout(every)
        try:
            return sock.recv(4096), time.monotonic() - started  # b"": closed
        except TimeoutError:
            continue
        except OSError:
            return b"", time.monotonic() - started
    pytest.fail(f"the server was still reading a dripped request after {GUARD} s")


# ------------------------------------------------------------------------------------------ one bad request


def test_a_bad_text_fails_alone_among_concurrent_good_ones(server, bbc_test):
    """16 clients, alternating good requests and ones holding a lone surrogate (valid JSON, no text the tokenizer
    takes): every bad one gets its own 422, every good one its 200 and its own answer."""
    clf = Classifier.load(server.model_dir, variant=json.loads(_request(server.url + "/health")[1])["variant"])
    texts = bbc_test.texts[:16]
    expected = clf.predict_proba([texts[0]])[0]

    def client(i):
        answers = []
        for turn in range(6):
            if (i + turn) % 2:
                body = json.dumps({"texts": [texts[i], "broken \ud800 text"]}).encode()  # ASCII: \ud800 escaped
                status, answer = _request(server.url + "/predict", body)
                answers.append(("bad", status, json.loads(answer)))
            else:
                answers.append(("good", *_predict(server.url, [texts[0], texts[i]])))
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client, range(16)) for a in batch]
    for kind, status, answer in answers:
        if kind == "bad":
            assert status == 422 and "lone surrogate" in json.dumps(answer), answer
        else:
            assert status == 200, answer
            assert np.abs(_probabilities(answer, clf.labels)[0] - expected).max() <= 1e-6  # its neighbours vary
    assert sum(kind == "good" for kind, _, _ in answers) == 48


# ------------------------------------------------------------------------------------------ batch invariance


@pytest.fixture(scope="module")
def all_variants(run_dir, tmp_path_factory):
    """The shared run exported with every variant: fp32, dynamic int8 and static int8."""
    from click.testing import CliRunner

    from llkd_edge.cli import main

    model_dir = tmp_path_factory.mktemp("variants") / "model"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(model_dir), "--quantize", "both"])
    assert result.exit_code == 0, result.output
    return model_dir


def test_every_variant_gives_a_text_the_same_answer_whatever_shares_its_batch(all_variants, bbc_test, tmp_path):
    from click.testing import CliRunner

    from llkd_edge.cli import main

    texts = [*bbc_test.texts[:40], "short", "a b", "word " * 300, "The striker scored twice.", "MPs voted."]
    manifest = json.loads((all_variants / "llkd_edge.json").read_text())
    assert set(manifest["variants"]) == {"fp32", "int8", "int8-static"}
    rng = np.random.default_rng(0)
    for variant in manifest["variants"]:
        clf = Classifier.load(all_variants, variant=variant, threads=1)
        assert clf.batching == {"fp32": "padded", "int8": "one text", "int8-static": "same length"}[variant]
        alone = np.concatenate([clf.predict_proba([t]) for t in texts])
        for batch_size in (2, 7, 32, 64):
            order = rng.permutation(len(texts))
            batched = clf.predict_proba([texts[i] for i in order], batch_size=batch_size)
            assert np.abs(batched - alone[order]).max() <= 1e-6, (variant, batch_size)
        # `llkd-edge predict`: the first text's line is the same alone and among the others
        lines = {}
        for name, batch in (("alone", texts[:1]), ("among others", texts)):
            out = tmp_path / f"{variant}-{len(batch)}.jsonl"
            result = CliRunner().invoke(main, ["predict", str(all_variants), "--variant", variant, "--out", str(out),
                                               *batch])
            assert result.exit_code == 0, result.output
            lines[name] = out.read_text().splitlines()[0]
        assert lines["alone"] == lines["among others"], variant


def test_the_service_gives_a_text_the_same_answer_whatever_shares_its_batch(server, bbc_test):
    clf = Classifier.load(server.model_dir, variant=json.loads(_request(server.url + "/health")[1])["variant"])
    probe, others = "Shares in the carmaker fell after it cut its forecast.", bbc_test.texts[:40]
    expected = clf.predict_proba([probe])[0]

    def ask(i):  # concurrent requests are batched together by the service, and each brings other neighbours
        status, answer = _predict(server.url, [*others[i : i + i % 5], probe, *others[i + 5 : i + 5 + i % 3]])
        return status, _probabilities(answer, clf.labels)[i % 5]

    with ThreadPoolExecutor(8) as pool:
        for status, probs in pool.map(ask, range(24)):
            assert status == 200 and np.abs(probs - expected).max() <= 1e-6


# ------------------------------------------------------------------------------------------ slow and large requests


def test_a_drip_fed_body_is_cut_off_with_408(server):
    with _connect(server) as sock:
        reply, seconds = _drip_until_answered(
            sock, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{", b"x")
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        started = time.monotonic()
        while reply and time.monotonic() - started < GUARD:  # a client that drips on is dropped soon after
            reply, _ = _drip_until_answered(sock, b"", b"x")
        assert reply == b""
    print(f"\ndripped body answered 408 after {seconds:.1f} s, closed {time.monotonic() - started:.1f} s later "
          f"(--read-timeout {READ_TIMEOUT})")


def test_a_drip_fed_head_and_an_idle_connection_are_closed(server):
    with _connect(server) as dripping, _connect(server) as idle:
        reply, seconds = _drip_until_answered(dripping, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-a: b\r\n")
        assert reply == b"", reply[:200]
        idle.settimeout(GUARD)
        assert idle.recv(100) == b""  # closed by the server, not by our guard (which would raise)
    print(f"\ndripped head closed after {seconds:.1f} s")


def test_a_slow_reader_is_dropped(server):
    """A client that asks for the model file and then takes nothing must not hold its connection (and a slot of
    the connection limit) forever: the server drops it after the read timeout, the file unfinished."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes block
        sock.settimeout(GUARD)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /model/model.onnx HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(READ_TIMEOUT * 3)
        received, started = b"", time.monotonic()
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
                assert time.monotonic() - started < GUARD
        except ConnectionResetError:
            pass
    size = (server.model_dir / Classifier.load(server.model_dir).path.relative_to(server.model_dir)).stat().st_size
    assert received.startswith(b"HTTP/1.1 200") and len(received) < size


@pytest.mark.parametrize("size", [40_000, 2_000_000])
def test_oversized_headers_are_refused(server, size):
    """A head that arrives whole gets 431 from the service; one still growing past h11's limit gets h11's 400
    (or the connection closes while we are still sending)."""
    with _connect(server) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
            reply = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
    assert reply == b"" or reply.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), reply[:200]


def test_a_foreign_host_header_gets_400(server):
    for host, status in ((f"127.0.0.1:{server.port}", 200), (f"localhost:{server.port}", 200),
                         ("attacker.example", 400), (f"rebound.attacker.example:{server.port}", 400)):
        assert _request(server.url + "/health", host=host)[0] == status, host
    assert _request(server.url + "/predict", b'{"texts": ["x"]}', host="attacker.example")[0] == 400


def test_idle_connections_do_not_lock_out_a_good_request(server):
    """More idle connections than the service's connection limit (512): a request is answered at once (503
    while they are open), and served once the read timeout has dropped them."""
    idle = [_connect(server) for _ in range(520)]
    try:
        started = time.monotonic()
        status, _ = _request(server.url + "/health")
        assert status in (200, 503)
        while status != 200 and time.monotonic() - started < GUARD:
            time.sleep(0.5)
            status, _ = _request(server.url + "/health")
        assert status == 200
        print(f"\nwith 520 idle connections: served after {time.monotonic() - started:.1f} s")
        for sock in idle[:20]:  # and they were closed by the server
            sock.settimeout(GUARD)
            assert sock.recv(10) == b""
    finally:
        for sock in idle:
            sock.close()


# ------------------------------------------------------------------------------------------ nothing leaks


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _raw_get(service: Service, path: str) -> bytes:
    """A GET with the path sent as is (urllib would tidy a ../ away)."""
    with _connect(service) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_no_answer_tells_the_model_folders_paths_config_or_prompt(server):
    manifest = json.loads((server.model_dir / "llkd_edge.json").read_text())
    labels = set(manifest["labels"])
    # the folder's place on disk and every path or sentence of the run's provenance (the distill config with
    # its data and store paths, the teacher's prompt and task)
    secrets = {str(server.model_dir), str(server.model_dir.resolve()), manifest["run"]["path"]}
    secrets |= {s for s in _strings(manifest["run"]) if len(s) >= 8 and ("/" in s or " " in s) and s not in labels}
    assert manifest["run"]["config"]["scoring"]["task"] in secrets
    for name in ("llkd_edge.json", "export_report.json", "README.md", "config.json", "onnx/model.onnx",
                 "../llkd_edge.json", "%2e%2e/llkd_edge.json", "..%2fllkd_edge.json"):
        assert _raw_get(server, "/model/" + name).startswith(b"HTTP/1.1 404"), name
    answers = [_raw_get(server, path) for path in
               ("/", "/health", "/openapi.json", "/docs", "/model/manifest.json", "/model/tokenizer_config.json",
                "/model/tokenizer.json", "/model/model.onnx", "/static/page.mjs", "/static/classifier.mjs",
                "/model/llkd_edge.json", "/nothing-here")]
    answers += [_request(server.url + "/predict", body)[1] for body in
                (b'{"texts": ["The central bank raised rates"]}', b'{"texts": ["\\ud800"]}', b"{broken")]
    for answer in answers:
        for secret in secrets:
            assert secret.encode() not in answer, (secret, answer[:200])
    health = json.loads(_request(server.url + "/health")[1])
    assert health["model"] == server.model_dir.name


def test_the_page_gets_the_variant_the_service_serves(server):
    health = json.loads(_request(server.url + "/health")[1])
    page_manifest = json.loads(_request(server.url + "/model/manifest.json")[1])
    assert page_manifest["default"] == health["variant"] and list(page_manifest["variants"]) == [health["variant"]]
    clf = Classifier.load(server.model_dir, variant=health["variant"])
    assert _request(server.url + "/model/model.onnx")[1] == clf.path.read_bytes()


# ------------------------------------------------------------------------------------------ fuzzing


def test_fuzzed_requests_get_no_5xx_and_answers_on_the_schema(server):
    """200 requests generated from the service's own OpenAPI schema (valid and invalid, for every operation):
    none may get a 5xx, and every answer must match the schema. (Through `as_strategy` and Hypothesis: the
    pytest loader `schemathesis.pytest.from_fixture` of 4.32.5 fails on pytest 9, which has no `Item._nodeid`.)"""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    statuses = []

    @given(case=cases)
    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call_and_validate(checks=[not_a_server_error, response_schema_conformance], timeout=30)
        statuses.append(response.status_code)

    fuzz()
    print(f"\n{len(statuses)} fuzzed requests: " + ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses))))


# ------------------------------------------------------------------------------------------ the CDN


def _cdn(route, changed: str | None = None):
    """Play the CDN from the npm copies; the file named ``changed`` gets one comment more."""
    from llkd_edge.deploy.serve import CDN, JS_LIBS

    rest = route.request.url.removeprefix(CDN + "/")
    name = next(n for n in JS_LIBS if rest.startswith(f"{n}@"))
    file = WEB_LIBS / name / rest.removeprefix(f"{name}@{JS_LIBS[name][0]}/")
    body = file.read_bytes() + (b"\n// changed\n" if file.name == changed else b"")
    kind = "application/wasm" if file.suffix == ".wasm" else "text/javascript"
    route.fulfill(status=200, body=body, headers={"content-type": kind, "access-control-allow-origin": "*"})


def _page_state(page, console: list[str]) -> str:
    """The page's status once it has settled: ready, error, or loading with a refused file logged."""
    for _ in range(600):
        state = page.eval_on_selector("#status", "e => e.dataset.state")
        if state != "loading" or any("integrity" in m for m in console):
            return state
        page.wait_for_timeout(200)
    return state


def test_the_page_refuses_a_cdn_file_that_is_not_the_pinned_one(exported, tmp_path, bbc_test):
    """The page served with CDN imports (an empty --js-libs folder), the CDN played by the browser's router from
    the npm copies: the true files load and classify; a file changed by one comment is refused, whether it is a
    module in the import map, the wasm glue module ort imports, or the .wasm."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (make setup runs apt-get install chromium where it can)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not (WEB_LIBS / "onnxruntime-web").is_dir():
        pytest.skip("examples/web has no node_modules: the npm copies play the CDN here")
    from llkd_edge.deploy.serve import CDN

    clf = Classifier.load(exported[0], variant="fp32")
    text = bbc_test.texts[0][:300]
    service = _start(exported[0], "--js-libs", str(tmp_path), "--variant", "fp32")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for changed in (None, "tokenizers.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
                page, console = browser.new_page(), []
                page.on("console", lambda message, sink=console: sink.append(message.text))
                # (not a default argument: playwright would pass the request to a handler with two parameters)
                page.route(f"{CDN}/**", functools.partial(_cdn, changed=changed))
                page.goto(service.url + "/")
                state = _page_state(page, console)
                if changed is None:
                    assert state == "ready", console
                    page.fill("#text", text)
                    page.click("#go")
                    page.wait_for_function("t => document.querySelector('#label').dataset.text === t", arg=text)
                    shown = {el.get_attribute("data-label"): float(el.get_attribute("data-p"))
                             for el in page.query_selector_all("#bars .bar")}
                    got = np.array([shown[name] for name in clf.labels])
                    assert np.abs(got - clf.predict_proba([text])[0]).max() < 1e-4
                else:
                    refused = next((m for m in console if "integrity" in m), "")
                    assert state != "ready" and (state == "error" or refused), (changed, state, console)
                    print(f"\n{changed} changed: page {state}; {refused[:120]}")
                page.close()
            browser.close()
    finally:
        _stop(service)
