"""Issue 45: a GGUF file from someone else never runs code. The real packaged SmolLM2 is copied with a hostile
chat template (the ``gguf`` package's metadata writer, in a subprocess) and given to ``llkd-edge label``."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from llkd_edge.cli import main
from llkd_edge.registry import resolve_teacher

SMOL_CHAT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _with_template(tmp_path, name: str, template: str):
    """A copy of the packaged SmolLM2 GGUF whose chat template is ``template``."""
    source = resolve_teacher("smollm2-135m-instruct").path
    target = tmp_path / f"{name}.gguf"
    done = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(source), str(target),
                           "--chat-template", template, "--force"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def _label(tmp_path, model):
    data = tmp_path / "two.csv"
    data.write_text("text\nShares fell after the profit warning.\nThe striker scored twice.\n", encoding="utf-8")
    return CliRunner().invoke(main, ["label", str(data), "--labels", "business,sports", "--teacher", str(model),
                                     "--prompt", "fixed", "--store", str(tmp_path / "labels.sqlite"),
                                     "--out", str(tmp_path / "labels.jsonl")])


@pytest.mark.parametrize("attack", ["run", "read", "mutate", "broken"])
def test_a_hostile_chat_template_runs_nothing_and_is_one_error_line(tmp_path, attack):
    marker = tmp_path / "pwned"
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    payload = {
        # the CVE-2024-34359 payload: from a Jinja global to os.popen
        "run": f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}",
        # a template that would put a file's contents into the prompt
        "read": f"{{% include '{secret}' %}}",
        # the arguments are read-only: a template cannot change what it was given
        "mutate": "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
        # not even a template: llama-cpp-python compiles it as the model loads
        "broken": "{% for %}",
    }[attack]
    model = _with_template(tmp_path, attack, payload + SMOL_CHAT)
    result = _label(tmp_path, model)
    assert not marker.exists()
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "its chat template cannot be used" in lines[0], result.output
    assert "the secret" not in result.output
    assert not (tmp_path / "labels.jsonl").exists()


def test_an_honest_template_still_labels_in_the_sandbox(tmp_path):
    model = _with_template(tmp_path, "honest", SMOL_CHAT)
    result = _label(tmp_path, model)
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "labels.jsonl").read_text().splitlines()) == 2
