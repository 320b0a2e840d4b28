"""The exported model outside Python's runtime: in Node (onnxruntime-node + tokenizers.js, and transformers.js
on the same folder), in a real headless Chromium (the page of `llkd-edge serve`), and behind `llkd-edge serve`'s
HTTP API. Every answer is checked against the Python runtime on the same texts. The JS packages and Chromium
come from the registries in `make setup` (tools/install-apps.sh); where they could not be installed these tests
skip and say why."""

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llkd_edge.runtime import Classifier
from tests.support import start_service, stop_service


ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "examples" / "node"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "runs" / "test-artifacts"  # the browser test's screenshot lands here


def _needs_node_example():
    if not shutil.which("node"):
        pytest.skip("Node is not installed on this machine")
    if not (NODE_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("examples/node has no node_modules: `make setup` could not run npm ci there (see its output)")


def _node(*args, stdin=None):
    done = subprocess.run(["node", *map(str, args)], cwd=NODE_EXAMPLE, capture_output=True, text=True, timeout=300,
                          input=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(params=["exported", "static_exported"])
def model_folder(request):
    """The transformer student's model folder, then the static-embedding student's (its graph written by hand)."""
    return request.getfixturevalue(request.param)


def test_node_gives_the_python_runtimes_probabilities(model_folder, bbc_test):
    _needs_node_example()
    model_dir, _ = model_folder
    texts = bbc_test.texts[:12] + ["short", "word " * 300]  # one cut to the token budget
    for variant, tolerance in (("fp32", 1e-4), ("int8", 1e-3)):
        rows = [json.loads(line) for line in _node("predict.mjs", model_dir, "--variant", variant, *texts).splitlines()]
        clf = Classifier.load(model_dir, variant=variant)
        expected = clf.predict_proba(texts)
        assert [r["text"] for r in rows] == texts
        got = np.array([[r["probabilities"][name] for name in clf.labels] for r in rows])
        print(f"\nNode {variant}: max |p - python| = {np.abs(got - expected).max():.2g}")
        assert np.abs(got - expected).max() < tolerance, variant
        assert [r["label"] for r in rows] == clf.predict(texts)
    # texts on stdin, and a bad folder is one error line with exit 2
    assert json.loads(_node("predict.mjs", model_dir, stdin="Oil prices hit a record\n"))["label"] in clf.labels
    bad = subprocess.run(["node", "predict.mjs", str(model_dir / "nope")], cwd=NODE_EXAMPLE, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_node_refuses_a_model_file_linked_out_of_the_folder(exported, tmp_path):
    _needs_node_example()
    model_dir, _ = exported
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    secret = tmp_path / "secret.json"
    shutil.move(copy / "tokenizer.json", secret)
    (copy / "tokenizer.json").symlink_to(secret)
    bad = subprocess.run(["node", "predict.mjs", str(copy), "a text"], cwd=NODE_EXAMPLE, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "lies outside the model folder" in bad.stderr, bad.stderr


def test_node_adds_the_special_tokens_of_the_tokenizers_own_template(exported, bbc_test, tmp_path):
    """A template other than BERT's [CLS] text [SEP] (two tokens before, two after, typed): Node must add what
    the Rust tokenizer adds, and cut long texts to the same budget."""
    from tokenizers import Tokenizer, processors

    _needs_node_example()
    model_dir = tmp_path / "model"
    shutil.copytree(exported[0], model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]")}
    tokenizer.post_processor = processors.TemplateProcessing(single="[SEP]:1 [CLS] $A [SEP] [SEP]:1",
                                                             special_tokens=list(ids.items()))
    tokenizer.save(str(model_dir / "tokenizer.json"))
    texts = [*bbc_test.texts[:4], "short", "word " * 300]
    clf = Classifier.load(model_dir, variant="fp32")
    assert clf.tokenizer.encode("short").ids[:2] == [ids["[SEP]"], ids["[CLS]"]]
    rows = [json.loads(line) for line in _node("predict.mjs", model_dir, "--variant", "fp32", *texts).splitlines()]
    got = np.array([[r["probabilities"][name] for name in clf.labels] for r in rows])
    assert np.abs(got - clf.predict_proba(texts)).max() < 1e-4


def test_transformers_js_loads_the_folder_unchanged(exported, bbc_test, tmp_path):
    _needs_node_example()
    if not (NODE_EXAMPLE / "node_modules" / "@huggingface" / "transformers").is_dir():
        pytest.skip("transformers.js (a dev dependency of examples/node) is not installed")
    model_dir, _ = exported
    # Texts within the token budget: transformers.js 4.3.1 cuts a longer text after adding [SEP], so it drops
    # the [SEP] that the Python runtime (and the Node example) keep; within the budget all agree.
    texts = [t[:160] for t in bbc_test.texts[:6]]
    script = NODE_EXAMPLE / f".probe-{os.getpid()}.mjs"  # inside the package, so its node_modules resolve
    script.write_text(
        'import { pipeline, env } from "@huggingface/transformers";\n'
        "env.allowRemoteModels = false;\n"
        f"env.localModelPath = {json.dumps(str(model_dir.parent) + '/')};\n"
        f"const texts = {json.dumps(texts)};\n"
        "const out = {};\n"
        'for (const dtype of ["fp32", "q8"]) {\n'
        f"  const classify = await pipeline('text-classification', {json.dumps(model_dir.name)}, {{ dtype }});\n"
        # one text per call: dynamic int8 takes its activation scales from the whole call, so a batched answer
        # depends on its neighbours (the Python runtime runs such a model one text per call)
        "  out[dtype] = [];\n"
        "  for (const text of texts) out[dtype].push(await classify(text, { top_k: null }));\n"
        "}\n"
        "console.log(JSON.stringify(out));\n")
    try:
        out = json.loads(_node(script.name).strip().splitlines()[-1])
    finally:
        script.unlink()
    for dtype, variant, tolerance in (("fp32", "fp32", 1e-4), ("q8", "int8", 1e-3)):
        clf = Classifier.load(model_dir, variant=variant)
        expected = clf.predict_proba(texts)
        got = np.array([[{r["label"]: r["score"] for r in row}[name] for name in clf.labels] for row in out[dtype]])
        assert np.abs(got - expected).max() < tolerance, dtype


@pytest.fixture(scope="module", params=["exported", "static_exported"])
def service(request):
    """`llkd-edge serve MODEL_DIR` on a free loopback port, as a user starts it, serving fp32 (not the folder's
    default): the page must then load fp32 too, and its numbers can be held to the runtime's at 1e-4. Once for the
    transformer student's folder, once for the static student's."""
    model_dir, _ = request.getfixturevalue(request.param)
    proc, url, _ = start_service(model_dir, "--max-texts", "64", "--max-body", "200000", "--threads", "1",
                                 "--variant", "fp32")
    try:
        yield url, model_dir
    finally:
        assert "Traceback" not in stop_service(proc)


def _post(url, body: bytes, headers=None):
    request = urllib.request.Request(url + "/predict", data=body,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_serve_answers_like_the_runtime_and_batches_concurrent_requests(service, bbc_test):
    url, model_dir = service
    clf = Classifier.load(model_dir, variant="fp32")
    texts = bbc_test.texts[:40]
    expected = clf.predict_proba(texts)

    def ask(i):
        return _post(url, json.dumps({"texts": texts[i : i + 2]}).encode())

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(0, 40, 2)))
    for i, (status, body) in zip(range(0, 40, 2), answers):
        assert status == 200
        assert body["labels"] == [clf.labels[j] for j in expected[i : i + 2].argmax(1)]
        got = np.array([[p[name] for name in clf.labels] for p in body["probabilities"]])
        assert np.abs(got - expected[i : i + 2]).max() < 1e-5
    health = json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())
    assert health["labels"] == list(clf.labels) and health["variant"] == clf.variant
    assert health["requests"] >= 20 and health["model_calls"] <= health["requests"]
    print(f"\n{health['requests']} requests answered in {health['model_calls']} model calls")
    docs = json.loads(urllib.request.urlopen(url + "/openapi.json", timeout=10).read())
    assert "/predict" in docs["paths"] and "/health" in docs["paths"]


@pytest.mark.parametrize("body,status", [
    (b"{not json", 422),
    (b'["a list, not an object"]', 422),
    (b"{}", 422),
    (b'{"texts": "one string"}', 422),
    (b'{"texts": [1, 2]}', 422),
    (b'{"texts": [null]}', 422),
    (b'{"texts": []}', 422),
    (json.dumps({"texts": ["a"] * 65}).encode(), 422),  # over --max-texts 64
    (json.dumps({"texts": ["x" * 250_000]}).encode(), 413),  # over --max-body
    (b"\xff\xfe\x00garbage", (400, 422)),  # undecodable bytes
])
def test_serve_refuses_bad_requests_with_a_4xx_and_a_json_body(service, body, status):
    url, _ = service
    got, answer = _post(url, body)
    assert got in (status if isinstance(status, tuple) else (status,)) and isinstance(answer, dict), (got, answer)


def test_serve_holds_its_body_limit_without_a_content_length(service):
    url, _ = service
    host, port = url.removeprefix("http://").split(":")
    chunk = b'{"texts": ["' + b"y" * 150_000
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(2):
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        reply = s.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_the_page_classifies_in_a_real_browser_like_the_runtime(service, bbc_test):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (make setup runs apt-get install chromium where it can)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not (ROOT / "examples" / "web" / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip("examples/web has no node_modules: `make setup` could not run npm ci there, and there is no CDN here")
    url, model_dir = service
    texts = [bbc_test.texts[0][:400], "The striker scored twice as the champions won the derby.",
             "MPs voted on the new budget bill in parliament."]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 640})
        fetched = []
        page.on("request", lambda r: fetched.append(r.url))
        calls_before = json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())["model_calls"]
        # the page runs the model the service serves (fp32 here, not the folder's default), with its numbers
        clf = Classifier.load(model_dir, variant="fp32")
        page.goto(url + "/")
        page.wait_for_selector("#status[data-state='ready']", timeout=120_000)
        assert "fp32 model" in page.inner_text("#status")
        for text in texts:
            probs = clf.predict_proba([text])[0]
            page.fill("#text", text)
            page.click("#go")
            page.wait_for_function("t => document.querySelector('#label').dataset.text === t", arg=text)
            shown = {el.get_attribute("data-label"): float(el.get_attribute("data-p"))
                     for el in page.query_selector_all("#bars .bar")}
            assert page.inner_text("#label") == clf.labels[int(probs.argmax())]
            got = np.array([shown[name] for name in clf.labels])
            assert np.abs(got - probs).max() < 1e-4, (text[:40], got, probs)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        browser.close()
    # the predictions were made in the browser: no request went to /predict, and the service ran no model call
    assert not any(u.endswith("/predict") for u in fetched)
    assert json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())["model_calls"] == calls_before
    assert (ARTIFACTS / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshot: {ARTIFACTS / 'page.png'}")
