"""The served teacher's parts that need no server: reading ``--teacher openai:...``."""

import pytest

from llkd_edge.config import TeacherConfig
from llkd_edge.teacher.endpoint import ServerSpec, api_key, parse_spec


@pytest.mark.parametrize("name, spec", [
    ("openai:http://127.0.0.1:8080/v1", ServerSpec("http://127.0.0.1:8080/v1", None, "plain")),
    ("openai:https://host/v1/#org/model-7b", ServerSpec("https://host/v1", "org/model-7b", "plain")),
    ("openai-chat:http://h:11434/v1#llama3", ServerSpec("http://h:11434/v1", "llama3", "chat")),
    ("gemma3-270m", None), ("models/x.gguf", None), ("openai:models/x.gguf", None), ("ollama:http://h/v1", None),
])
def test_a_server_teacher_is_named_by_its_scheme_and_url(name, spec):
    assert parse_spec(name) == spec


def test_an_ensemble_may_mix_a_file_and_a_server():
    assert TeacherConfig(model="gemma3-270m,openai:http://127.0.0.1:8080/v1").members == (
        "gemma3-270m", "openai:http://127.0.0.1:8080/v1")


def test_the_api_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("LLKD_EDGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key() is None
    monkeypatch.setenv("OPENAI_API_KEY", "b")
    assert api_key() == "b"
    monkeypatch.setenv("LLKD_EDGE_API_KEY", "a")
    assert api_key() == "a"
