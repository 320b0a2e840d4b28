"""Helpers shared by the tests (imported as ``tests.support``; the repository root is on sys.path)."""


def one_error_line(result, message: str) -> None:
    """A CLI result that failed as bad input should: exit code 2 and one ``error:`` line naming ``message``, no
    traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


def start_service(model_dir, *options: str):
    """`llkd-edge serve MODEL_DIR OPTIONS` on a free loopback port, as a user starts it, once it answers /health:
    (the process, its URL, its port). Stop it with ``stop_service``."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = [sys.executable, "-m", "llkd_edge.cli", "serve", str(model_dir), "--port", str(port), *options]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert "serving" in proc.stdout.readline()
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/health", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
    except BaseException:
        stop_service(proc)
        raise
    return proc, url, port


def stop_service(proc) -> str:
    """Stop a service from ``start_service``; what it wrote to stderr."""
    proc.terminate()
    proc.wait(timeout=30)
    return proc.stderr.read()
