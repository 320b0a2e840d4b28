"""Helpers shared by the tests (imported as ``tests.support``; the repository root is on sys.path)."""


def one_error_line(result, message: str) -> None:
    """A CLI result that failed as bad input should: exit code 2 and one ``error:`` line naming ``message``, no
    traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
