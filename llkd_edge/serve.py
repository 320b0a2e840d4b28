"""``llkd-edge serve MODEL_DIR``: an exported model as an HTTP service (FastAPI on uvicorn; the ``serve`` extra).

    POST /predict   {"texts": ["...", ...]} -> {"labels": [...], "probabilities": [{label: p}, ...], "model": ...}
    GET  /health    which model, variant and ONNX Runtime provider it serves
    GET  /          a page that classifies what a person types, in the browser (onnxruntime-web; the service
                    only hands it the model files under /model/)
    GET  /docs      OpenAPI docs

Requests that arrive together are answered by one ONNX Runtime call (``Batcher``), so concurrent clients share
batches instead of queueing one by one. Bad requests get a 4xx with a JSON body, never a 500: malformed JSON or
wrong types (422), an empty list or more than ``max_texts`` texts (422), a body over ``max_body`` bytes (413).
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the route's annotations at definition
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .runtime import Classifier

WEB = files("llkd_edge") / "web"
MAX_TEXTS = 256  # per request
MAX_BODY = 1_000_000  # bytes per request body
BATCH_TEXTS = 64  # one ONNX Runtime call takes at most this many texts from waiting requests
# The page's two libraries: served from a local node_modules folder when there is one (offline use, the
# tests), else from a CDN at these pinned versions.
JS_LIBS = {"onnxruntime-web": ("1.30.0", "dist/ort.wasm.min.mjs"), "@huggingface/tokenizers": ("0.2.0", "dist/tokenizers.mjs")}
CDN = "https://cdn.jsdelivr.net/npm"
REPO_JS_LIBS = Path(__file__).resolve().parents[1] / "examples" / "web" / "node_modules"


@dataclass(frozen=True)
class ServeConfig:
    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None
    variant: str | None = None
    max_texts: int = MAX_TEXTS
    max_body: int = MAX_BODY
    js_libs: str | None = None  # a node_modules folder holding the page's libraries; None: the repo's, else CDN


class Batcher:
    """Collects the texts of requests waiting at the same moment and scores them in one call, off the event loop."""

    def __init__(self, clf: Classifier, max_texts: int = BATCH_TEXTS):
        self.clf, self.max_texts = clf, max_texts
        self.queue: asyncio.Queue = asyncio.Queue()
        self.calls = 0  # ONNX Runtime calls made; with `requests` served, how much batching happened
        self.requests = 0

    async def predict(self, texts: list[str]):
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, done))
        return await done

    async def run(self) -> None:
        while True:
            waiting = [await self.queue.get()]
            count = len(waiting[0][0])
            while count < self.max_texts and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
                count += len(waiting[-1][0])
            texts = [t for request, _ in waiting for t in request]
            try:
                probs = await asyncio.to_thread(self.clf.predict_proba, texts)
            except Exception as exc:  # noqa: BLE001 (handed to every waiting request, which answers 500 itself)
                for _, done in waiting:
                    if not done.done():
                        done.set_exception(exc)
                continue
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


def create_app(config: ServeConfig, clf: Classifier | None = None):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field, StrictStr

    clf = clf or Classifier.load(config.model_dir, variant=config.variant, threads=config.threads)
    batcher = Batcher(clf)
    js_libs = Path(config.js_libs) if config.js_libs else (REPO_JS_LIBS if REPO_JS_LIBS.is_dir() else None)
    urls = js_lib_urls(js_libs)

    class PredictRequest(BaseModel):
        texts: list[StrictStr] = Field(min_length=1, max_length=config.max_texts,
                                       description=f"1 to {config.max_texts} texts to classify")

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
                "model": Path(config.model_dir).name,
                "variant": clf.variant}

    @app.get("/health")
    async def health():
        """Which model, variant and ONNX Runtime provider this service runs; how much batching happened."""
        return {"status": "ok", "model": str(Path(config.model_dir).resolve()), "variant": clf.variant,
                "provider": clf.provider, "labels": list(clf.labels), "max_texts": config.max_texts,
                "model_calls": batcher.calls, "requests": batcher.requests}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        html = (WEB / "index.html").read_text(encoding="utf-8")
        return html.replace("/*IMPORTS*/", json.dumps({"imports": {**urls, "llkd-classifier": "/static/classifier.mjs"}}))

    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")
    app.mount("/model", StaticFiles(directory=str(Path(config.model_dir))), name="model")
    if urls[next(iter(JS_LIBS))].startswith("/vendor/"):
        app.mount("/vendor", StaticFiles(directory=str(js_libs)), name="vendor")

    @app.exception_handler(Exception)
    async def failed(request, exc):  # a model failure is the server's fault, but still one JSON line
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

    return BodyLimit(app, config.max_body)


class BodyLimit:
    """ASGI wrapper: a request body over ``limit`` bytes is answered 413 before the app sees it. The body is read
    here (the limit bounds it) and replayed to the app, so chunked uploads without Content-Length are held too."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        payload = json.dumps({"error": f"request body over {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def serve(config: ServeConfig) -> None:
    import uvicorn

    app = create_app(config)
    print(f"serving {config.model_dir} on http://{config.host}:{config.port}/ (POST /predict, GET /health, "
          f"docs at /docs)", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
