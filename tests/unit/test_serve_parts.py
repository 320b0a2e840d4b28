"""Hostile model folders and requests, without a real model: a folder's files must stay inside it and its
manifest must be well formed (one ModelError line otherwise); a dynamically quantised model must score a text
the same in any batch; the service's parts (batcher, body limit, host check, the page's files and its import
map's integrity hashes, the JS post-processor reader) hold against bad input. Tiny ONNX graphs are built here
with the onnx package; the service runs on uvicorn in a thread."""

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from llkd_edge.errors import ModelError, UserError
from llkd_edge.runtime import Classifier

ROOT = Path(__file__).resolve().parents[2]
WEB_LIBS = ROOT / "examples" / "web" / "node_modules"
VOCAB = {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3, "[CLS]": 4, "[SEP]": 5, "<s>": 6, "</s>": 7, "zz": 8}


# ------------------------------------------------------------------------------------------ a tiny model folder


def tiny_graph():
    """input_ids (N, L) -> logits (N, 2): the sum of a text's ids times a (1, 2) weight. Pad id 0 adds nothing,
    so padding cannot move a score; only quantisation can."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.array([[0.9, -0.7]], dtype=np.float32), "W")
    nodes = [helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["x"], ["s"], axes=[1], keepdims=1),
             helper.make_node("MatMul", ["s", "W"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [weight])
    # opset 11: ReduceSum's axes an attribute (so W is the only tensor); IR 8: onnx 1.23 would write 14, newer
    # than ONNX Runtime 1.31 reads
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8)


def tokenizer_file(path: Path, post_processor=None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if post_processor is not None:
        tokenizer.post_processor = post_processor
    tokenizer.save(str(path))


def model_folder(folder: Path, **manifest) -> Path:
    """A loadable model folder: the tiny graph as fp32, a tokenizer, and ``llkd_edge.json`` (``manifest`` overrides)."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(tiny_graph(), str(folder / "model.onnx"))
    tokenizer_file(folder / "tokenizer.json")
    written = {"labels": ["a", "b"], "max_length": 16, "pad_token_id": 0, "default": "fp32",
               "variants": {"fp32": "model.onnx"}, **manifest}
    (folder / "llkd_edge.json").write_text(json.dumps(written))
    return folder


def one_line_model_error(folder: Path, match: str, **load) -> None:
    with pytest.raises(ModelError, match=match) as error:
        Classifier.load(folder, device="cpu", **load)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ hostile folders


@pytest.mark.parametrize("name", ["../../somewhere/model.onnx", "ABSOLUTE"])
def test_a_variant_file_outside_the_folder_is_refused(tmp_path, name):
    import onnx

    outside = tmp_path / "somewhere" / "model.onnx"
    outside.parent.mkdir()
    onnx.save_model(tiny_graph(), str(outside))  # a real, loadable model: refused for where it is, not what
    name = str(outside) if name == "ABSOLUTE" else name
    folder = model_folder(tmp_path / "a" / "model", variants={"fp32": name})
    one_line_model_error(folder, "outside the model folder")


@pytest.mark.parametrize("linked", ["model.onnx", "tokenizer.json", "llkd_edge.json"])
def test_a_file_linked_out_of_the_folder_is_refused(tmp_path, linked):
    folder = model_folder(tmp_path / "model")
    outside = model_folder(tmp_path / "elsewhere") / linked
    (folder / linked).unlink()
    (folder / linked).symlink_to(outside)
    one_line_model_error(folder, "outside the model folder")


@pytest.mark.parametrize("manifest, match", [
    ([], "not a JSON object"),
    ({"labels": [], "variants": {"fp32": "model.onnx"}, "default": "fp32"}, "no label names"),
    ("a string", "not a JSON object"),
    ({"labels": "ab", "variants": {"fp32": "model.onnx"}, "default": "fp32"}, "labels must be a list"),
    ({"labels": ["a", 2], "variants": {"fp32": "model.onnx"}, "default": "fp32"}, "labels must be a list"),
    ({"labels": ["a", "a"], "variants": {"fp32": "model.onnx"}, "default": "fp32"}, "distinct"),
    ({"labels": ["a", "b"], "variants": ["model.onnx"], "default": "fp32"}, "variants must map"),
    ({"labels": ["a", "b"], "variants": {"fp32": 7}, "default": "fp32"}, "variants must map"),
    ({"labels": ["a", "b"], "variants": {"fp32": "model.onnx"}}, "default must be one of"),
    ({"labels": ["a", "b"], "variants": {"fp32": "model.onnx"}, "default": ["fp32"]}, "default must be one of"),
    *[({"labels": ["a", "b"], "variants": {"fp32": "model.onnx"}, "default": "fp32", "max_length": bad}, "max_length")
      for bad in ("64", 0, -3, 8193, 10**12, True, 64.5, None)],
    *[({"labels": ["a", "b"], "variants": {"fp32": "model.onnx"}, "default": "fp32", "pad_token_id": bad},
       "pad_token_id") for bad in (-1, "0", 1.5, [0])],
], ids=lambda v: json.dumps(v)[:60] if not isinstance(v, str) else v)
def test_a_malformed_manifest_is_one_model_error_line(tmp_path, manifest, match):
    folder = model_folder(tmp_path / "model")
    (folder / "llkd_edge.json").write_text(json.dumps(manifest))
    one_line_model_error(folder, match)


@pytest.mark.parametrize("config", [[1, 2], {"id2label": ["x", "y"]}, {"id2label": {"0": 5}},
                                    {"id2label": {"0": "x"}, "max_position_embeddings": "big"}])
def test_a_malformed_optimum_config_is_one_model_error_line(tmp_path, config):
    folder = model_folder(tmp_path / "model")
    (folder / "llkd_edge.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    one_line_model_error(folder, "config.json")


@pytest.mark.parametrize("location", ["../secret.bin", "ABSOLUTE"])
def test_external_tensor_data_outside_the_folder_is_never_read(tmp_path, location):
    """ONNX Runtime 1.31 refuses such a location itself (this pins it: an upgrade that stopped would fail here)."""
    import onnx

    folder = model_folder(tmp_path / "model")
    onnx.save_model(tiny_graph(), str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    secret = tmp_path / "secret.bin"
    secret.write_bytes((folder / "weights.bin").read_bytes())  # the same bytes: a read would load fine
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    entry = next(e for e in graph.graph.initializer[0].external_data if e.key == "location")
    entry.value = str(secret) if location == "ABSOLUTE" else location
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    one_line_model_error(folder, "not a usable ONNX model")
    # the same file with its weights inside the folder loads: what was refused is the location alone
    entry.value = "weights.bin"
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    assert Classifier.load(folder, device="cpu").predict(["a b"])[0] in ("a", "b")


# ------------------------------------------------------------------------------------------ batch invariance


def test_a_quantised_model_scores_a_text_the_same_in_any_batch(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

    class Feed(CalibrationDataReader):
        def __init__(self):
            self.rows = iter([np.array([[2, 3, 8]], dtype=np.int64), np.array([[8] * 9], dtype=np.int64)])

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"input_ids": row}

    folder = model_folder(tmp_path / "model", variants={"fp32": "model.onnx", "int8": "int8.onnx",
                                                          "int8-static": "static.onnx"})
    quantize_dynamic(folder / "model.onnx", folder / "int8.onnx", weight_type=QuantType.QInt8)
    quantize_static(folder / "model.onnx", folder / "static.onnx", Feed())
    texts = ["a", "b a", "zz zz zz zz zz zz zz zz", "a a a b", "zz", "b b"]
    clfs = {v: Classifier.load(folder, v, device="cpu") for v in ("fp32", "int8", "int8-static")}
    assert {v: clf.batching for v, clf in clfs.items()} == {"fp32": "padded", "int8": "one text",
                                                            "int8-static": "same length"}
    for clf in clfs.values():
        alone = np.concatenate([clf.predict_proba([t]) for t in texts])
        for batch_size in (2, 6):
            assert np.abs(clf.predict_proba(texts, batch_size=batch_size) - alone).max() <= 1e-6, clf.variant
    # the check has teeth: batched, the one activation scale of the whole batch moves the short texts' scores
    clfs["int8"].batching = "padded"
    alone = np.concatenate([clfs["int8"].predict_proba([t]) for t in texts])
    assert np.abs(clfs["int8"].predict_proba(texts, batch_size=6) - alone).max() > 1e-4


# ------------------------------------------------------------------------------------------ the service's parts


class Stub:
    """What create_app and Batcher use of a Classifier; ``fail_on``: a text whose batch raises."""

    labels, variant, provider, max_length, pad_token_id = ("a", "b"), "fp32", "CPUExecutionProvider", 16, 0

    def __init__(self, path: Path, fail_on: str | None = None, error: str = "boom"):
        self.path, self.fail_on, self.error, self.calls = path, fail_on, error, 0

    def predict_proba(self, texts):
        self.calls += 1
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(self.error)
        return np.tile([0.25, 0.75], (len(texts), 1))


def test_a_failing_batch_is_retried_request_by_request(tmp_path):
    from llkd_edge.deploy.serve import Batcher

    async def scenario():
        batcher = Batcher(Stub(tmp_path, fail_on="bad"))
        requests = [["good 1"], ["bad"], ["good 2", "good 3"]]
        asks = [asyncio.ensure_future(batcher.predict(r)) for r in requests]  # queued before the worker runs
        worker = asyncio.create_task(batcher.run())
        answers = await asyncio.wait_for(asyncio.gather(*asks, return_exceptions=True), 30)
        worker.cancel()
        return batcher, answers

    batcher, (one, bad, two) = asyncio.run(scenario())
    assert isinstance(bad, RuntimeError)
    assert one.shape == (1, 2) and two.shape == (2, 2)
    assert batcher.requests == 2 and batcher.clf.calls == 4  # the shared call failed, then one call each


class Panic(BaseException):
    """What a Rust panic in tokenizers raises (pyo3's PanicException is no Exception)."""


class PanickingStub(Stub):
    def predict_proba(self, texts):
        if "bad" in texts:
            self.calls += 1
            raise Panic("tokenizer panicked")
        return super().predict_proba(texts)


def test_a_panic_fails_its_request_alone_and_the_worker_lives_on(tmp_path):
    from llkd_edge.deploy.serve import Batcher

    async def scenario():
        batcher = Batcher(PanickingStub(tmp_path))
        worker = asyncio.create_task(batcher.run())
        bad = await asyncio.wait_for(asyncio.gather(batcher.predict(["bad"]), return_exceptions=True), 30)
        after = await asyncio.wait_for(batcher.predict(["good"]), 30)  # the worker still answers
        worker.cancel()
        return bad[0], after

    bad, after = asyncio.run(scenario())
    assert isinstance(bad, RuntimeError) and "Panic" in str(bad)
    assert after.shape == (1, 2)


def test_the_batcher_queue_is_bounded(tmp_path):
    from llkd_edge.deploy.serve import Batcher, Busy

    async def scenario():
        batcher = Batcher(Stub(tmp_path), max_queue=2)  # no worker: nothing leaves the queue
        waiting = [asyncio.ensure_future(batcher.predict(["t"])) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="2 requests are waiting"):
            await batcher.predict(["one too many"])
        for w in waiting:
            w.cancel()

    asyncio.run(scenario())


def _drive(app, messages, scope_extra=None):
    """Run an ASGI app on one POST whose body arrives as ``messages`` (then nothing, ever): what it sends back,
    and the body the inner app received."""
    sent, seen = [], []

    async def inner(scope, receive, send):
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        queue = list(messages)

        async def receive():
            if queue:
                return queue.pop(0)
            await asyncio.Event().wait()  # a client that stops sending, but keeps the connection

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "headers": [], **(scope_extra or {})}
        await asyncio.wait_for(app(inner)(scope, receive, send), 60)  # a guard, not a timing: never hang the suite

    asyncio.run(scenario())
    return sent, seen


def test_body_limit_takes_a_body_dripped_a_byte_at_a_time(tmp_path):
    from llkd_edge.deploy.serve import RequestLimits

    body = b'{"texts": ["' + b"x" * 20_000 + b'"]}'
    drip = [{"type": "http.request", "body": body[i : i + 1], "more_body": i + 1 < len(body)} for i in range(len(body))]
    sent, seen = _drive(lambda app: RequestLimits(app, 100_000, seconds=30), drip)
    assert seen == [body] and sent[0]["status"] == 200


def test_body_limit_answers_408_when_the_body_stops_coming(tmp_path):
    from llkd_edge.deploy.serve import RequestLimits

    sent, seen = _drive(lambda app: RequestLimits(app, 100_000, seconds=0.3),
                        [{"type": "http.request", "body": b'{"texts": ["', "more_body": True}])
    assert not seen and sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"].startswith("request body not received within")
    sent, _ = _drive(lambda app: RequestLimits(app, 10, seconds=30),
                     [{"type": "http.request", "body": b"x" * 11, "more_body": True}])
    assert sent[0]["status"] == 413


def test_allowed_hosts(tmp_path):
    from llkd_edge.config_deploy import ServeConfig
    from llkd_edge.deploy.serve import allowed_hosts

    assert allowed_hosts(ServeConfig("m")) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts(ServeConfig("m", host="0.0.0.0")) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts(ServeConfig("m", host="10.0.0.5", allowed_hosts=("Box.lan", "fe80::1", "*.example.com"))) \
        == ["localhost", "127.0.0.1", "[::1]", "10.0.0.5", "box.lan", "[fe80::1]", "*.example.com"]
    with pytest.raises(UserError, match="a wildcard may only start a name"):
        allowed_hosts(ServeConfig("m", allowed_hosts=("a*b.com",)))
    with pytest.raises(UserError, match="without a port"):
        allowed_hosts(ServeConfig("m", allowed_hosts=("box.lan:8000",)))


@contextmanager
def running(app):
    """``app`` on uvicorn (h11) on a free loopback port, in a thread: its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", http="h11"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def fetch(url, body: bytes | None = None, host: str | None = None):
    headers = {"content-type": "application/json", **({"host": host} if host else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def stub_service(tmp_path):
    pytest.importorskip("fastapi")
    from llkd_edge.config_deploy import ServeConfig
    from llkd_edge.deploy.serve import create_app

    folder = model_folder(tmp_path / "secret-folder-name" / "model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"unk_token": "[UNK]", "name_or_path": str(folder)}))
    clf = Stub(folder / "model.onnx", fail_on="explode", error=f"the model at {folder} broke")
    with running(create_app(ServeConfig(str(folder), allowed_hosts=("box.lan",)), clf=clf)) as url:
        yield url, folder


def test_the_service_tells_no_path_and_no_exception_text(stub_service):
    url, folder = stub_service
    status, body = fetch(url + "/predict", json.dumps({"texts": ["explode"]}).encode())
    assert status == 500 and json.loads(body) == {"error": "internal error; the server's log has the details"}
    status, body = fetch(url + "/health")
    assert status == 200 and json.loads(body)["model"] == "model" and str(folder.parent) not in body.decode()
    status, body = fetch(url + "/predict", json.dumps({"texts": ["fine"]}).encode())
    assert status == 200 and json.loads(body)["model"] == "model"


def test_a_text_that_is_not_unicode_gets_422(stub_service):
    url, _ = stub_service
    for texts in ('["\\ud800"]', '["fine", "x\\udfff"]'):
        status, body = fetch(url + "/predict", b'{"texts": ' + texts.encode() + b"}")
        assert status == 422 and "lone surrogate" in body.decode(), (texts, body)


def test_the_host_header_is_checked(stub_service):
    url, _ = stub_service
    for host, status in (("127.0.0.1", 200), ("localhost:8000", 200), ("[::1]:1234", 200), ("box.lan", 200),
                         ("evil.example", 400), ("127.0.0.1.evil.example", 400)):
        assert fetch(url + "/health", host=host)[0] == status, host


def test_the_page_gets_only_the_files_it_needs(stub_service):
    url, folder = stub_service
    assert fetch(url + "/model/llkd_edge.json")[0] == 404
    assert fetch(url + "/model/config.json")[0] == 404
    status, body = fetch(url + "/model/manifest.json")
    assert status == 200 and json.loads(body) == {"labels": ["a", "b"], "max_length": 16, "pad_token_id": 0,
                                                   "default": "fp32", "variants": {"fp32": "model.onnx"}}
    assert fetch(url + "/model/model.onnx") == (200, (folder / "model.onnx").read_bytes())
    assert fetch(url + "/model/tokenizer.json") == (200, (folder / "tokenizer.json").read_bytes())
    assert json.loads(fetch(url + "/model/tokenizer_config.json")[1]) == {"unk_token": "[UNK]"}
    status, page = fetch(url + "/")
    imports = json.loads(page.decode().split('<script type="importmap">')[1].split("</script>")[0])
    assert imports["imports"]["llkd-classifier"] == "/static/classifier.mjs"


# ------------------------------------------------------------------------------------------ the page's libraries


def test_cdn_imports_carry_integrity_hashes():
    from llkd_edge.deploy.serve import CDN, JS_INTEGRITY, import_map, js_lib_urls

    cdn = import_map(js_lib_urls(None))
    assert all(u.startswith(CDN) for name, u in cdn["imports"].items() if name != "llkd-classifier")
    assert set(cdn["imports"].values()) - {"/static/classifier.mjs"} <= set(cdn["integrity"])
    assert len(cdn["integrity"]) == len(JS_INTEGRITY)
    assert all(v.startswith("sha384-") for v in cdn["integrity"].values())
    if WEB_LIBS.is_dir():  # served locally: the same origin, no hashes needed
        assert import_map(js_lib_urls(WEB_LIBS))["integrity"] == {}


def test_the_integrity_hashes_match_the_pinned_npm_files():
    from llkd_edge.deploy.serve import JS_INTEGRITY, JS_LIBS

    if not WEB_LIBS.is_dir():
        pytest.skip("examples/web/node_modules is not installed (tools/install-apps.sh)")
    for name, (version, _) in JS_LIBS.items():
        assert json.loads((WEB_LIBS / name / "package.json").read_text())["version"] == version
    for file, digest in JS_INTEGRITY.items():
        actual = "sha384-" + base64.b64encode(hashlib.sha384((WEB_LIBS / file).read_bytes()).digest()).decode()
        assert actual == digest, f"{file}: recompute JS_INTEGRITY in llkd_edge/deploy/serve.py (see its comment)"


def test_classifier_mjs_takes_special_tokens_from_the_post_processor(tmp_path):
    """classifier.mjs's specialTokens() against what the Rust tokenizer adds, for each kind of post-processor."""
    from tokenizers import Tokenizer, processors

    if not shutil.which("node"):
        pytest.skip("Node is not installed on this machine")
    kinds = {
        "bert template": processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4), ("[SEP]", 5)]),
        "suffix only": processors.TemplateProcessing(single="$A [SEP]", special_tokens=[("[SEP]", 5)]),
        "two before, typed": processors.TemplateProcessing(single="[CLS] <s>:1 $A:1 [SEP]:1 [SEP]",
                                                           special_tokens=[("[CLS]", 4), ("<s>", 6), ("[SEP]", 5)]),
        "BertProcessing": processors.BertProcessing(("[SEP]", 5), ("[CLS]", 4)),
        "RobertaProcessing": processors.RobertaProcessing(("</s>", 7), ("<s>", 6)),
        "sequence": processors.Sequence([processors.ByteLevel(), processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 6), ("</s>", 7)])]),
        "none": None,
    }
    expected, processors_json = {}, {}
    for name, processor in kinds.items():
        tokenizer_file(tmp_path / "t.json", processor)
        processors_json[name] = json.loads((tmp_path / "t.json").read_text())["post_processor"]
        encoding = Tokenizer.from_file(str(tmp_path / "t.json")).encode("a b a")
        pairs = list(zip(encoding.ids, encoding.type_ids))
        start = next(i for i, (token, _) in enumerate(pairs) if token in (2, 3))
        expected[name] = {"prefix": [list(p) for p in pairs[:start]], "suffix": [list(p) for p in pairs[start + 3 :]],
                          "typeId": pairs[start][1]}
    script = (f"import {{ specialTokens }} from {json.dumps(str(ROOT / 'llkd_edge' / 'deploy' / 'web' / 'classifier.mjs'))};\n"
              f"const kinds = {json.dumps(processors_json)};\n"
              "console.log(JSON.stringify(Object.fromEntries(Object.entries(kinds).map(([k, p]) => [k, specialTokens(p)]))));\n")
    (tmp_path / "probe.mjs").write_text(script)
    done = subprocess.run(["node", str(tmp_path / "probe.mjs")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected


@pytest.mark.parametrize("name", ["../other/model.onnx", "onnx/../../model.onnx", "/etc/model.onnx", "C:\\\\m.onnx"])
def test_classifier_mjs_refuses_a_model_file_outside_the_folder(tmp_path, name):
    if not shutil.which("node"):
        pytest.skip("Node is not installed on this machine")
    manifest = {"labels": ["a", "b"], "default": "fp32", "variants": {"fp32": name}}
    script = (f"import {{ loadClassifier }} from {json.dumps(str(ROOT / 'llkd_edge' / 'deploy' / 'web' / 'classifier.mjs'))};\n"
              "const read = async (file) => { if (file === 'llkd_edge.json') return "
              f"{json.dumps(manifest)}; throw new Error(`read ${{file}}`); }};\n"
              "try { await loadClassifier({ ort: {}, Tokenizer: class {}, read }); }\n"
              "catch (error) { console.log(error.message); }\n")
    (tmp_path / "probe.mjs").write_text(script)
    done = subprocess.run(["node", str(tmp_path / "probe.mjs")], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"{name}: lies outside the model folder; refused", done.stdout + done.stderr
