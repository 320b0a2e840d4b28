"""The served teacher against the in-process one: texts/s with 1, 4 and 16 requests in flight, and label quality
on the same texts with the same prompt.

Starts llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`, --logits_all true) on loopback,
serving the packaged teacher with the same threads the in-process teacher gets, then, side by side in one run:

* in-process: `llama.Teacher` (llama.cpp in this process, the prompt prefix cached), text by text;
* served, N in flight: `server.ServerTeacher` (`--teacher openai:URL --parallel N`), N = 1, 4, 16.

Speed on the first --speed-texts BBC News test texts (each path in turn; the server idle while the in-process
teacher runs). Quality on the first --texts: accuracy and macro-F1 against the gold labels, for both teachers,
their agreement and the largest difference in a label's probability, and the texts where a label fell outside
the log-probs the server returned (it then gets the lowest returned one).

    python -m bench.server_teacher [--texts 300] [--speed-texts 48] [--threads N]

Writes bench/results/server_teacher.json and .md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import RESULTS, arguments, markdown_table, record, write_report
from llkd_edge.config import LabelSet, ScoringConfig, TeacherConfig
from llkd_edge.data import load_builtin
from llkd_edge.metrics import classification_scores
from llkd_edge.registry import resolve_teacher
from llkd_edge.teacher.llama import Teacher
from llkd_edge.teacher.server import ServerTeacher

OUT = RESULTS / "server_teacher.json"


def start_server(gguf: Path, threads: int, port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--logits_all", "true", "--n_threads", str(threads),
                             "--n_ctx", "2048"], stdout=log, stderr=log)
    for _ in range(900):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not answer in 180 s")


def cpu_flags() -> list[str]:
    """The instruction sets that move llama.cpp's speed (speeds differ about 2x between machines with and without)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]


def timed(teacher, texts: list[str]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    probs = teacher.predict_proba(texts)
    return probs, time.perf_counter() - started


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--speed-texts", type=int, default=48)
    parser.add_argument("--teacher", default="gemma3-270m")
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()

    test = load_builtin("bbc-news:test").head(args.texts)
    labels = LabelSet.parse(test.labels)
    scoring = ScoringConfig(labels=labels, task=test.task)
    gguf = resolve_teacher(args.teacher)
    url = f"openai:http://127.0.0.1:{args.port}/v1"
    speed_texts = test.texts[: args.speed_texts]
    speed: dict[str, dict] = {}
    with tempfile.TemporaryFile("w+") as log:
        proc = start_server(gguf.path, args.threads, args.port, log)
        try:
            local = Teacher(gguf, scoring, TeacherConfig(model=args.teacher, n_threads=args.threads))
            try:
                local.predict_proba(speed_texts[:1])  # the prefix and the calibration inputs, before the clock
                _, seconds = timed(local, speed_texts)
                speed["in-process"] = {"seconds": round(seconds, 2), "texts_per_s": round(len(speed_texts) / seconds, 3)}
                local_probs, local_seconds = timed(local, test.texts)
            finally:
                local.close()
            served_probs, floored = None, 0
            for n in (1, 4, 16):
                served = ServerTeacher(url, scoring, TeacherConfig(model=url, parallel=n))
                try:
                    _, seconds = timed(served, speed_texts)
                    speed[f"served, {n} in flight"] = {"seconds": round(seconds, 2),
                                                       "texts_per_s": round(len(speed_texts) / seconds, 3),
                                                       "retried_requests": served.retried_batches}
                    if n == 4:
                        served.floored = 0
                        served_probs, served_seconds = timed(served, test.texts)
                        floored, top = served.floored, served.top_logprobs
                finally:
                    served.close()
        finally:
            proc.terminate()
            proc.wait()
    quality = {}
    for name, probs in (("in-process", local_probs), ("served", served_probs)):
        q = classification_scores(test.gold, [labels.names[i] for i in probs.argmax(1)], labels.names)
        quality[name] = {"accuracy": round(q["accuracy"], 4), "macro_f1": round(q["macro_f1"], 4)}
    diff = np.abs(served_probs - local_probs)
    base = speed["in-process"]["texts_per_s"]
    report = {
        **record(args.threads, "llama_cpp_python", "httpx"), "cpu_flags": cpu_flags(),
        "teacher": args.teacher, "teacher_sha256": gguf.sha256, "data": "bbc-news:test", "texts": len(test.texts),
        "speed_texts": len(speed_texts), "max_text_tokens": scoring.max_text_tokens, "prompt": local.prompt,
        "speed": {k: {**v, "vs_in_process": round(v["texts_per_s"] / base, 3)} for k, v in speed.items()},
        "quality": quality,
        "agreement": round(float((served_probs.argmax(1) == local_probs.argmax(1)).mean()), 4),
        "max_abs_prob_difference": round(float(diff.max()), 4),
        "mean_abs_prob_difference": round(float(diff.mean()), 5),
        "floored_texts": floored, "top_logprobs": top,
        "quality_pass_seconds": {"in-process": round(local_seconds, 1), "served, 4 in flight": round(served_seconds, 1)},
    }
    md = "\n".join([
        (f"{args.teacher} on {len(speed_texts)} BBC News test texts (speed) and {len(test.texts)} (quality), "
         f"{args.threads} threads for either, {scoring.max_text_tokens} text tokens, same prompt; "
         f"CPU: {report['machine']['cpu']} ({', '.join(report['cpu_flags'])})"), "",
        markdown_table(["teacher", "texts/s", "vs in-process"],
                       [[k, v["texts_per_s"], report["speed"][k]["vs_in_process"]] for k, v in speed.items()]), "",
        markdown_table(["teacher", "accuracy", "macro-F1"],
                       [[k, v["accuracy"], v["macro_f1"]] for k, v in quality.items()]), "",
        (f"same label on {report['agreement']:.1%} of the texts; largest difference in a label's probability "
         f"{report['max_abs_prob_difference']}, mean {report['mean_abs_prob_difference']}; {floored} texts had a label "
         f"outside the top {top} log-probs the server returned"),
    ])
    write_report(OUT, report, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
