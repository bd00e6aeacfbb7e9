"""Chat template rendering (Jinja and built-in) and oldest-first history truncation."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from ane_build.chat.errors import ChatError
from ane_build.chat.template import (
    TEMPLATE_FILE,
    TINYLLAMA_CHAT_TEMPLATE,
    ChatTemplate,
    Message,
    render_tinyllama,
    truncate_history,
)
from ane_build.chat.tiny import TinyLlamaConfig, tokenizer_config

HISTORY: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "Name a colour.\nJust one."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another?"},
]

EXPECTED = (
    "<|system|>\nYou are a helpful assistant.</s>\n"
    "<|user|>\nHi!</s>\n"
    "<|assistant|>\nHello. How can I help?</s>\n"
    "<|user|>\nName a colour.\nJust one.</s>\n"
    "<|assistant|>\nBlue.</s>\n"
    "<|user|>\nAnother?</s>\n"
    "<|assistant|>\n"
)

# The same format written the way model authors often lay templates out: one tag per line,
# indented block tags, relying on trim_blocks/lstrip_blocks to swallow the layout whitespace
# (the newline after each expression line is part of the output).
MULTILINE_TEMPLATE = """{% for message in messages %}
    {% if message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\\n' + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""


def test_jinja_template_from_tokenizer_config_matches_tinyllama_format() -> None:
    template = ChatTemplate.from_tokenizer_config(tokenizer_config(TinyLlamaConfig()))
    assert not template.is_builtin
    assert template.render(HISTORY) == EXPECTED


def test_builtin_fallback_matches_tinyllama_format() -> None:
    template = ChatTemplate.from_tokenizer_config({"eos_token": "</s>"})
    assert template.is_builtin
    assert template.render(HISTORY) == EXPECTED
    assert render_tinyllama(HISTORY) == EXPECTED


def test_jinja_and_builtin_agree_without_generation_prompt() -> None:
    jinja = ChatTemplate(TINYLLAMA_CHAT_TEMPLATE, {"eos_token": "</s>"})
    builtin = ChatTemplate(None, {"eos_token": "</s>"})
    jinja_text = jinja.render(HISTORY, add_generation_prompt=False)
    assert jinja_text == builtin.render(HISTORY, add_generation_prompt=False)
    assert jinja_text == EXPECTED.removesuffix("<|assistant|>\n")


def test_multiline_template_renders_with_trim_and_lstrip_blocks() -> None:
    config = {"chat_template": MULTILINE_TEMPLATE, "eos_token": {"content": "</s>"}}
    assert ChatTemplate.from_tokenizer_config(config).render(HISTORY) == EXPECTED


def test_named_template_list_selects_default() -> None:
    config = {
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": TINYLLAMA_CHAT_TEMPLATE},
        ],
    }
    assert ChatTemplate.from_tokenizer_config(config).render(HISTORY) == EXPECTED


def test_special_tokens_reach_the_template() -> None:
    template = ChatTemplate("{{ bos_token }}|{{ eos_token }}", {"bos_token": "<s>"})
    assert template.render([]) == "<s>|</s>"


@pytest.mark.parametrize("source", [TINYLLAMA_CHAT_TEMPLATE, None])
def test_unknown_role_is_an_error(source: str | None) -> None:
    with pytest.raises(ChatError, match="unknown role"):
        ChatTemplate(source).render([{"role": "wizard", "content": "x"}])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",
        "{% for %}",
    ],
)
def test_sandbox_and_syntax_errors_become_chat_errors(source: str) -> None:
    with pytest.raises(ChatError):
        ChatTemplate(source).render(HISTORY)


# A template of another family (ChatML-like), so which file was read shows in the output.
CHATML_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SHORT: list[Message] = [{"role": "user", "content": "Hi!"}]
CHATML_SHORT = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
TINYLLAMA_SHORT = "<|user|>\nHi!</s>\n<|assistant|>\n"


def write_folder(
    folder: Path, *, jinja: str | None, config_template: str | None
) -> dict[str, object]:
    config: dict[str, object] = {"eos_token": "</s>", "bos_token": "<s>"}
    if config_template is not None:
        config["chat_template"] = config_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if jinja is not None:
        (folder / TEMPLATE_FILE).write_text(jinja, encoding="utf-8")
    return config


def test_chat_template_jinja_wins_over_tokenizer_config(tmp_path: Path) -> None:
    config = write_folder(tmp_path, jinja=CHATML_TEMPLATE, config_template=TINYLLAMA_CHAT_TEMPLATE)
    template = ChatTemplate.from_dir(tmp_path, config)
    assert template.render(SHORT) == CHATML_SHORT
    assert template.origin == TEMPLATE_FILE
    assert "chat_template.jinja" in template.description


def test_jinja_file_keeps_the_special_tokens_of_tokenizer_config(tmp_path: Path) -> None:
    config = write_folder(tmp_path, jinja="{{ bos_token }}|{{ eos_token }}", config_template=None)
    assert ChatTemplate.from_dir(tmp_path, config).render([]) == "<s>|</s>"


def test_tokenizer_config_template_is_used_without_a_jinja_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_folder(tmp_path, jinja=None, config_template=CHATML_TEMPLATE)
    with caplog.at_level(logging.WARNING, logger="ane_build.chat.template"):
        template = ChatTemplate.from_dir(tmp_path, config)
    assert template.render(SHORT) == CHATML_SHORT
    assert template.origin == "tokenizer_config.json"
    assert not caplog.records


def test_missing_template_falls_back_to_tinyllama_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_folder(tmp_path, jinja=None, config_template=None)
    with caplog.at_level(logging.WARNING, logger="ane_build.chat.template"):
        template = ChatTemplate.from_dir(tmp_path, config)
    assert template.is_builtin
    assert template.render(SHORT) == TINYLLAMA_SHORT
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "built-in TinyLlama" in warnings[0].getMessage()
    assert TEMPLATE_FILE in warnings[0].getMessage()


def test_unreadable_jinja_file_is_a_chat_error(tmp_path: Path) -> None:
    config = write_folder(tmp_path, jinja=None, config_template=None)
    (tmp_path / TEMPLATE_FILE).write_bytes(b"\xff\xfe{{ broken")
    with pytest.raises(ChatError, match=r"chat_template\.jinja"):
        ChatTemplate.from_dir(tmp_path, config)


def turn_count(messages: Sequence[Message]) -> int:
    return sum(1 for m in messages if m["role"] == "user")


def test_truncation_drops_oldest_turns_first_and_keeps_system() -> None:
    budget = len(render_tinyllama(HISTORY[:1] + HISTORY[3:]))
    kept, dropped = truncate_history(HISTORY, lambda m: len(render_tinyllama(m)) <= budget)
    assert dropped == 1
    assert kept == HISTORY[:1] + HISTORY[3:]


def test_truncation_never_drops_system_or_the_last_turn() -> None:
    kept, dropped = truncate_history(HISTORY, lambda m: False)
    assert dropped == 2
    assert kept == [HISTORY[0], HISTORY[-1]]


def test_truncation_keeps_everything_that_fits() -> None:
    kept, dropped = truncate_history(HISTORY, lambda m: True)
    assert (kept, dropped) == (HISTORY, 0)


def test_truncation_without_system_prompt() -> None:
    history = HISTORY[1:]
    kept, dropped = truncate_history(history, lambda m: turn_count(m) <= 2)
    assert dropped == 1
    assert kept == history[2:]


def test_truncation_drops_a_turn_with_all_its_replies() -> None:
    history: list[Message] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "d"},
    ]
    kept, dropped = truncate_history(history, lambda m: len(m) <= 2)
    assert dropped == 1
    assert kept == [history[0], history[4]]
