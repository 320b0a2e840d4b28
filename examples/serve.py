"""A tiny HTTP classification service that embeds an exported student. Needs only `llkd-edge[runtime]`
(onnxruntime, tokenizers, numpy): no torch, no llama.cpp, no web framework.

    python examples/serve.py MODEL_DIR [--port 8000] [--threads 2]

    curl -s localhost:8000/predict -d '{"texts": ["Shares fell after the results", "A late goal won it"]}'
    -> {"labels": ["business", "sports"], "probabilities": [{"business": 0.91, ...}, ...]}

GET /health says which model, variant and ONNX Runtime provider it serves.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llkd_edge.runtime import Classifier

MAX_TEXTS = 256  # per request: keeps one request from holding the model for long


def make_handler(clf: Classifier):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/health":
                return self._send(404, {"error": "use POST /predict or GET /health"})
            self._send(200, {"model": str(clf.path), "variant": clf.variant, "provider": clf.provider,
                             "labels": list(clf.labels)})

        def do_POST(self):
            if self.path != "/predict":
                return self._send(404, {"error": "use POST /predict"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                texts = body["texts"]
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return self._send(400, {"error": 'send JSON like {"texts": ["some text", ...]}'})
            if len(texts) > MAX_TEXTS:
                return self._send(413, {"error": f"at most {MAX_TEXTS} texts per request"})
            probs = clf.predict_proba(texts)
            self._send(200, {
                "labels": [clf.labels[j] for j in probs.argmax(axis=1)],
                "probabilities": [{name: round(float(p), 4) for name, p in zip(clf.labels, row)} for row in probs],
            })

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet: one line per request is noise for a demo
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    clf = Classifier.load(args.model_dir, threads=args.threads)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(clf))
    print(f"serving {clf.path} ({clf.variant}, {clf.provider}) on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
