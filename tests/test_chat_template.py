"""Chat template rendering (Jinja and built-in) and oldest-first history truncation."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ane_build.chat.errors import ChatError
from ane_build.chat.template import (
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
