"""``llkd-edge serve MODEL_DIR``: an exported model as an HTTP service (FastAPI on uvicorn; the ``serve`` extra).

    POST /predict   {"texts": ["...", ...]} -> {"labels": [...], "probabilities": [{label: p}, ...], "model": ...}
    GET  /health    which model (the folder's name), variant and ONNX Runtime provider it serves
    GET  /          a page that classifies what a person types, in the browser (onnxruntime-web; the service
                    hands it only the files it needs under /model/: the served ONNX file, the tokenizer, and
                    labels + token budget, never the folder's llkd_edge.json with the run's paths and prompt)
    GET  /docs      OpenAPI docs

Requests that arrive together are answered by one ONNX Runtime call (``Batcher``), so concurrent clients share
batches instead of queueing one by one; a batch that fails is retried request by request, so one bad request
fails alone. Bad requests get a 4xx with a JSON body, never a 500: malformed JSON, wrong types or a text that
is not valid Unicode (422), an empty list or more than ``max_texts`` texts (422), a body over ``max_body``
bytes (413) or not sent within ``read_timeout`` seconds (408), headers over ``MAX_HEAD`` bytes (431).

No client can tie the service up or make it talk: a connection that sends no whole request head within
``read_timeout`` is closed (h11 answers a head still growing past ``MAX_HEAD`` with a plain 400); a Host header
naming none of the allowed hosts gets a plain 400 (so a web page cannot reach a loopback service by DNS
rebinding); more than ``max_queue`` requests waiting for the model, or ``max_connections`` open, get 503. A 500
says only that it failed; its detail goes to the server's stderr.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the route's annotations at definition
import json
from importlib.resources import files
from pathlib import Path

from ..config_deploy import ServeConfig
from ..errors import UserError
from ..runtime import Classifier

WEB = files("llkd_edge.deploy") / "web"
BATCH_TEXTS = 64  # one ONNX Runtime call takes at most this many texts from waiting requests
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open after a response
MAX_HEAD = 16 * 1024  # bytes of request line and headers (h11 refuses a longer head)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # Host headers always allowed
WILDCARD_BINDS = ("", "0.0.0.0", "::")  # addresses that name no host a client would send
# The page's two libraries: served from a local node_modules folder when there is one (offline use, the
# tests), else from a CDN at these pinned versions.
JS_LIBS = {"onnxruntime-web": ("1.30.0", "dist/ort.wasm.min.mjs"), "@huggingface/tokenizers": ("0.2.0", "dist/tokenizers.mjs")}
CDN = "https://cdn.jsdelivr.net/npm"
REPO_JS_LIBS = Path(__file__).resolve().parents[2] / "examples" / "web" / "node_modules"
# Subresource Integrity of every file the page loads from the CDN: the two modules, the wasm glue module that
# ort imports, and the .wasm (page.mjs fetches it with this hash and hands the bytes to ort). The browser
# refuses a file whose hash differs. After changing a version above, recompute from the npm copies:
#   cd examples/web && npm ci && for f in onnxruntime-web/dist/{ort.wasm.min.mjs,ort-wasm-simd-threaded.mjs,\
#   ort-wasm-simd-threaded.wasm} @huggingface/tokenizers/dist/tokenizers.mjs; do
#   echo "$f sha384-$(openssl dgst -sha384 -binary node_modules/$f | base64 -w0)"; done
# (tests/unit/test_serve_parts.py recomputes them from examples/web/node_modules when it is installed.)
JS_INTEGRITY = {
    "onnxruntime-web/dist/ort.wasm.min.mjs": "sha384-SfFfy/pvthiOsgaw3KX0bV5TfQ6Iq+oY9KutMe4SxIuHH4cl+DCSD4rTsYOoG1tJ",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs":
        "sha384-XcXA/MtAf0WpB8e023xQH9CM7RIjiugakT7x99DIwpFf7k56BIFFcAPerIF7FDad",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm":
        "sha384-vjBJ1z7qrhkTyYsNqKeF6c7N+nOJSU94czEo+tvZcu8G75JparGq9kB+kTnEUNVM",
    "@huggingface/tokenizers/dist/tokenizers.mjs":
        "sha384-XNsk0cJdleRt4ka6UipTAQgdBmXZKtyMSQ29fMyEWTtagbc6pDnl3yY8jOPuPsqG",
}
# What @huggingface/tokenizers 0.2.0 reads from tokenizer_config.json; the page gets only these keys.
TOKENIZER_CONFIG_KEYS = ("additional_special_tokens", "remove_space", "clean_up_tokenization_spaces",
                         "do_lowercase_and_remove_accent", "bos_token", "eos_token", "pad_token", "unk_token",
                         "target_lang")


class Busy(Exception):
    """The batcher's queue is full: the service answers 503 rather than queue without bound."""


class Batcher:
    """Collects the texts of requests waiting at the same moment and scores them in one call, off the event loop."""

    def __init__(self, clf: Classifier, max_texts: int = BATCH_TEXTS, max_queue: int = ServeConfig.max_queue):
        self.clf, self.max_texts = clf, max_texts
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.calls = 0  # ONNX Runtime calls made; with `requests` served, how much batching happened
        self.requests = 0

    async def predict(self, texts: list[str]):
        done = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((texts, done))
        except asyncio.QueueFull:
            raise Busy(f"{self.queue.maxsize} requests are waiting for the model; try again shortly") from None
        return await done

    async def run(self) -> None:
        while True:
            waiting = [await self.queue.get()]
            count = len(waiting[0][0])
            while count < self.max_texts and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
                count += len(waiting[-1][0])
            await self._answer(waiting)

    async def _answer(self, waiting: list) -> None:
        texts = [t for request, _ in waiting for t in request]
        try:
            probs = await asyncio.to_thread(self.clf.predict_proba, texts)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 (a tokenizers panic is no Exception, and must not end the worker)
            if len(waiting) > 1:  # one request's texts must not fail the others batched with it: each alone
                for one in waiting:
                    await self._answer([one])
                return
            if not waiting[0][1].done():  # as an Exception, so the app's 500 handler answers it
                failure = exc if isinstance(exc, Exception) else RuntimeError(f"the model failed ({type(exc).__name__})")
                waiting[0][1].set_exception(failure)
            return
        self.calls += 1
        self.requests += len(waiting)
        start = 0
        for request, done in waiting:
            if not done.done():  # a client that went away has cancelled its future
                done.set_result(probs[start : start + len(request)])
            start += len(request)


def js_lib_urls(js_libs: Path | None) -> dict[str, str]:
    """Import-map entries for the page: local /vendor/ URLs when ``js_libs`` holds both libraries, else the CDN."""
    if js_libs and all((js_libs / name / entry).is_file() for name, (_, entry) in JS_LIBS.items()):
        return {name: f"/vendor/{name}/{entry}" for name, (_, entry) in JS_LIBS.items()}
    return {name: f"{CDN}/{name}@{version}/{entry}" for name, (version, entry) in JS_LIBS.items()}


def import_map(urls: dict[str, str]) -> dict:
    """The page's import map: ``urls`` and, for files from the CDN, their Subresource Integrity hashes."""
    integrity = {}
    for file, digest in JS_INTEGRITY.items():
        name = next(n for n in JS_LIBS if file.startswith(n + "/"))
        version = JS_LIBS[name][0]
        if urls[name].startswith(CDN):
            integrity[f"{CDN}/{name}@{version}/{file.removeprefix(name + '/')}"] = digest
    return {"imports": {**urls, "llkd-classifier": "/static/classifier.mjs"}, "integrity": integrity}


def allowed_hosts(config: ServeConfig) -> list[str]:
    """Host header names the service answers: localhost, the bind address (unless it binds every interface) and
    ``config.allowed_hosts``; IPv6 literals bracketed as they appear in a Host header."""
    hosts = [*LOCAL_HOSTS, *([] if config.host in WILDCARD_BINDS else [config.host]), *config.allowed_hosts]
    for host in config.allowed_hosts:  # the patterns starlette's TrustedHostMiddleware accepts
        if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
            raise UserError(f"--allowed-hosts {host!r}: a wildcard may only start a name, as in *.example.com")
        if host.count(":") == 1:
            raise UserError(f"--allowed-hosts {host!r}: give the name without a port")
    # an IPv6 literal (two colons or more) is bracketed in a Host header
    return list(dict.fromkeys(f"[{h}]" if h.count(":") > 1 and not h.startswith("[") else h.lower() for h in hosts))


def create_app(config: ServeConfig, clf: Classifier | None = None):
    from contextlib import asynccontextmanager
    from typing import Annotated

    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import AfterValidator, BaseModel, Field, StrictStr
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    hosts = allowed_hosts(config)
    clf = clf or Classifier.load(config.model_dir, variant=config.variant, threads=config.threads)
    batcher = Batcher(clf, max_queue=config.max_queue)
    js_libs = Path(config.js_libs) if config.js_libs else (REPO_JS_LIBS if REPO_JS_LIBS.is_dir() else None)
    urls = js_lib_urls(js_libs)
    folder = Path(config.model_dir)
    model_name = folder.resolve().name  # never the absolute path: it tells a client about the server's disks

    class PredictRequest(BaseModel):
        texts: list[Annotated[StrictStr, AfterValidator(_unicode)]] = Field(
            min_length=1, max_length=config.max_texts, description=f"1 to {config.max_texts} texts to classify")

    class PredictResponse(BaseModel):
        labels: list[str]
        probabilities: list[dict[str, float]]
        model: str
        variant: str

    @asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="llkd-edge", summary=f"Text classification: {', '.join(clf.labels)}", lifespan=lifespan)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest):
        """Labels and class probabilities for each text (requests arriving together share one model call)."""
        probs = await batcher.predict(request.texts)
        labels = list(clf.labels)
        return {"labels": [labels[j] for j in probs.argmax(axis=1)],
                "probabilities": [dict(zip(labels, map(float, row))) for row in probs],
                "model": model_name,
                "variant": clf.variant}

    @app.get("/health")
    async def health():
        """Which model, variant and ONNX Runtime provider this service runs; how much batching happened."""
        return {"status": "ok", "model": model_name, "variant": clf.variant,
                "provider": clf.provider, "labels": list(clf.labels), "max_texts": config.max_texts,
                "model_calls": batcher.calls, "requests": batcher.requests}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        html = (WEB / "index.html").read_text(encoding="utf-8")
        return html.replace("/*IMPORTS*/", json.dumps(import_map(urls)))

    # What the page loads, and nothing else of the folder: the served variant (so the page runs the model
    # /predict runs), the tokenizer, and the few manifest keys classifier.mjs reads.
    page_manifest = {"labels": list(clf.labels), "max_length": clf.max_length, "pad_token_id": clf.pad_token_id,
                     "default": clf.variant, "variants": {clf.variant: "model.onnx"}}
    page_files = {"model.onnx": clf.path, "tokenizer.json": folder / "tokenizer.json"}
    tokenizer_config = _tokenizer_config(folder)

    @app.get("/model/{name}", include_in_schema=False)
    async def model_file(name: str):
        if name == "manifest.json":
            return page_manifest
        if name == "tokenizer_config.json":
            return tokenizer_config
        if name not in page_files:
            raise HTTPException(404, "not one of the files the page loads")
        return FileResponse(page_files[name])

    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")
    if urls[next(iter(JS_LIBS))].startswith("/vendor/"):  # each library's dist/ folder only
        for name in JS_LIBS:
            app.mount(f"/vendor/{name}/dist", StaticFiles(directory=str(js_libs / name / "dist")), name=f"vendor-{name}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):  # pydantic's own answer echoes the input, which JSON may not encode
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Busy)
    async def busy(request, exc):
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"retry-after": "1"})

    @app.exception_handler(Exception)
    async def failed(request, exc):  # the detail is for the operator: uvicorn logs the traceback to stderr
        return JSONResponse({"error": "internal error; the server's log has the details"}, status_code=500)

    # The host check comes first, so a request from a rebound name is refused before its body is read.
    return TrustedHostMiddleware(RequestLimits(app, config.max_body, config.read_timeout), allowed_hosts=hosts,
                                 www_redirect=False)


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800": valid JSON, but no text the tokenizer takes
        raise ValueError("not valid Unicode text (it holds a lone surrogate)") from None
    return text


def _tokenizer_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: config[k] for k in TOKENIZER_CONFIG_KEYS if k in config} if isinstance(config, dict) else {}


class SlowReader(Exception):
    """A client took more than the read timeout to take one part of a response: its connection is dropped."""


class RequestLimits:
    """ASGI wrapper: headers over ``MAX_HEAD`` bytes are answered 431, a request body over ``limit`` bytes 413, and
    one not received within ``seconds`` 408, before the app sees them. The body is read here (the limits bound it)
    and replayed to the app, so chunked uploads without Content-Length are held too. A client that does not take
    a part of a response within ``seconds`` (a slow reader holding a connection open) is dropped."""

    def __init__(self, app, limit: int, seconds: float = ServeConfig.read_timeout):
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            return await self._limited(scope, receive, self._bounded(send))
        except SlowReader:  # uvicorn closes a connection whose response was started but not finished
            return None

    def _bounded(self, send):
        async def bounded(message):
            try:
                async with asyncio.timeout(self.seconds):
                    await send(message)
            except TimeoutError:
                raise SlowReader from None

        return bounded

    async def _limited(self, scope, receive, send):
        # h11 refuses a longer head only while it is incomplete; one that arrives whole in a read passes it
        if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEAD:
            return await _refuse(send, 431, f"request headers over {MAX_HEAD} bytes")
        if scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _refuse(send, 413, f"request body over {self.limit} bytes")
        try:
            async with asyncio.timeout(self.seconds):  # a client dripping its body must not hold a request
                body = await self._read(receive)
        except TimeoutError:
            return await _refuse(send, 408, f"request body not received within {self.seconds:g} s")
        if body is None:
            return None
        if len(body) > self.limit:
            return await _refuse(send, 413, f"request body over {self.limit} bytes")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _read(self, receive) -> bytearray | None:
        """The body, read until it ends or passes ``limit``; None if the client went away. A bytearray: a body
        dripped a byte at a time must not cost a copy of all of it per byte."""
        body, more = bytearray(), True
        while more and len(body) <= self.limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
        return body


async def _refuse(send, status: int, error: str) -> None:
    """A JSON error answered before the body is read whole. The connection stays open (closing it with the
    client's body unread resets it, and the client may never see this answer): uvicorn drops the rest of the
    body, and the head deadline (``_protocol``) closes a connection that sends no next request in time."""
    payload = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _protocol(read_timeout: float):
    """uvicorn's h11 protocol, but a connection that has not sent a request head within ``read_timeout`` seconds
    (of opening, or of its last response) is closed: uvicorn bounds neither, so idle or dripping connections
    would pile up and, counting against ``max_connections``, lock everyone else out."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadline(H11Protocol):
        deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self.deadline is not None:
                self.deadline.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self.deadline is not None:
                self.deadline.cancel()
            self.deadline = self.loop.call_later(read_timeout, self._expire)

        def _expire(self):
            # a request the app is answering has its own limits (the body deadline, the batcher's queue)
            waiting_for_head = self.cycle is None or self.cycle.response_complete
            if waiting_for_head and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline


def serve(config: ServeConfig) -> None:
    import uvicorn

    app = create_app(config)
    print(f"serving {config.model_dir} on http://{config.host}:{config.port}/ (POST /predict, GET /health, "
          f"docs at /docs)", flush=True)
    if config.host in WILDCARD_BINDS and "*" not in config.allowed_hosts:
        print(f"requests must name one of these hosts: {', '.join(allowed_hosts(config))} (add the names clients "
              f"use with --allowed-hosts)", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", http=_protocol(config.read_timeout),
                h11_max_incomplete_event_size=MAX_HEAD, timeout_keep_alive=KEEP_ALIVE,
                limit_concurrency=config.max_connections)
