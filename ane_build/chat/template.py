"""Chat prompt rendering: the model's own Jinja chat template, or the built-in TinyLlama format.

The model's template comes from ``chat_template.jinja`` beside the tokenizer or, failing that, from
``tokenizer_config.json`` (the file wins, as in transformers). Templates run in jinja2's immutable
sandbox with the settings model authors write them for (``trim_blocks``, ``lstrip_blocks``, loop
controls). Also decides which old turns to drop when a conversation outgrows the context. This
module must not tokenize or run models: callers pass a ``fits`` predicate for truncation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

from ._deps import require
from .errors import ChatError

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    """One chat message, in the shape chat templates expect."""

    role: str
    content: str


#: The TinyLlama chat format as a Jinja template: each turn is ``<|role|>``, newline, content,
#: end-of-sequence token, newline; the generation prompt opens an assistant turn.
TINYLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_ROLES = ("system", "user", "assistant")
#: Where recent transformers versions save the template, and exports made with them copy it.
TEMPLATE_FILE = "chat_template.jinja"
_TOKENIZER_CONFIG = "tokenizer_config.json"


def render_tinyllama(
    messages: Sequence[Message], *, add_generation_prompt: bool = True, eos_token: str = "</s>"
) -> str:
    """Render ``messages`` in the TinyLlama chat format without Jinja.

    Args:
        messages: System, user and assistant messages in order.
        add_generation_prompt: End with an open ``<|assistant|>`` turn.
        eos_token: The text that closes each turn.

    Returns:
        The prompt text.

    Raises:
        ChatError: A message has a role other than system, user or assistant.
    """
    parts = []
    for message in messages:
        if message["role"] not in _ROLES:
            raise ChatError(f"unknown role: {message['role']}")
        parts.append(f"<|{message['role']}|>\n{message['content']}{eos_token}\n")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def token_text(value: object) -> str | None:
    """The text of a special token as ``tokenizer_config.json`` stores it (string or dict)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return None


def _special_tokens(config: Mapping[str, Any]) -> dict[str, str]:
    tokens = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        text = token_text(config.get(key))
        if text is not None:
            tokens[key] = text
    return tokens


def _raise_exception(message: str) -> None:
    raise ChatError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None) -> str:
    # jinja2's own tojson escapes HTML characters, which would corrupt prompts.
    return json.dumps(value, ensure_ascii=False, indent=indent)


class ChatTemplate:
    """Renders chat messages into a prompt string.

    Args:
        source: Jinja source of the model's template; None selects the built-in TinyLlama format.
        special_tokens: Values for ``bos_token``, ``eos_token``, ``unk_token`` and ``pad_token``.
        origin: Where ``source`` was read from, for messages (e.g. ``chat_template.jinja``).
    """

    def __init__(
        self,
        source: str | None,
        special_tokens: Mapping[str, str] | None = None,
        *,
        origin: str | None = None,
    ) -> None:
        self.source = source
        self.origin = origin
        self.special_tokens = dict(special_tokens or {})
        self.special_tokens.setdefault("eos_token", "</s>")
        self._compiled: Any = None

    @classmethod
    def from_dir(cls, directory: Path, tokenizer_config: Mapping[str, Any]) -> ChatTemplate:
        """The template of a model folder: ``chat_template.jinja``, else ``tokenizer_config.json``.

        The special tokens always come from ``tokenizer_config.json``. With no template in
        either place the built-in TinyLlama format is used, and a warning says so: for any
        other model family that format gives prompts the model was never trained on.

        Args:
            directory: The folder holding the tokenizer files.
            tokenizer_config: Its parsed ``tokenizer_config.json`` (empty when absent).

        Raises:
            ChatError: A template is present but unreadable or not a string.
        """
        path = Path(directory) / TEMPLATE_FILE
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            template = cls.from_tokenizer_config(tokenizer_config)
        except (OSError, UnicodeDecodeError) as exc:
            raise ChatError(f"{path}: cannot read the chat template: {exc}") from exc
        else:
            template = cls(source, _special_tokens(tokenizer_config), origin=TEMPLATE_FILE)
        if template.is_builtin:
            log.warning(
                "%s: no chat template in %s or %s; using the built-in TinyLlama chat format",
                directory,
                TEMPLATE_FILE,
                _TOKENIZER_CONFIG,
            )
        return template

    @classmethod
    def from_tokenizer_config(cls, config: Mapping[str, Any]) -> ChatTemplate:
        """Build from a parsed ``tokenizer_config.json`` (its ``chat_template`` and tokens).

        A list of named templates (newer configs) selects the one named ``default``.
        """
        source = config.get("chat_template")
        if isinstance(source, list):
            named = {
                item.get("name"): item.get("template")
                for item in source
                if isinstance(item, Mapping)
            }
            source = named.get("default") or next(iter(named.values()), None)
        if source is not None and not isinstance(source, str):
            raise ChatError(f"{_TOKENIZER_CONFIG}: chat_template is not a string")
        origin = _TOKENIZER_CONFIG if source else None
        return cls(source or None, _special_tokens(config), origin=origin)

    @property
    def is_builtin(self) -> bool:
        """True when rendering uses the built-in TinyLlama format."""
        return self.source is None

    @property
    def description(self) -> str:
        """Which template renders prompts, for messages."""
        if self.is_builtin:
            return "built-in TinyLlama chat format"
        return f"chat template from {self.origin or 'the caller'}"

    def _template(self) -> Any:
        if self._compiled is None:
            sandbox = require("jinja2.sandbox")
            jinja2 = require("jinja2")
            env = sandbox.ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = _strftime_now
            env.filters["tojson"] = _tojson
            try:
                self._compiled = env.from_string(self.source)
            except jinja2.TemplateError as exc:
                raise ChatError(f"chat template does not compile: {exc}") from exc
        return self._compiled

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """Render ``messages`` into prompt text.

        Raises:
            ChatError: The template fails or rejects the messages.
        """
        if self.source is None:
            return render_tinyllama(
                messages,
                add_generation_prompt=add_generation_prompt,
                eos_token=self.special_tokens["eos_token"],
            )
        template = self._template()
        jinja2 = require("jinja2")
        try:
            text: str = template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise ChatError(f"chat template failed: {exc}") from exc
        return text


def truncate_history(
    messages: Sequence[Message], fits: Callable[[Sequence[Message]], bool]
) -> tuple[list[Message], int]:
    """Drop the oldest turns until ``fits`` accepts the messages.

    A turn is a user message with the messages after it up to the next user message. Leading
    system messages are never dropped, and neither is the last turn.

    Args:
        messages: The whole conversation, ending with the newest user message.
        fits: Whether a candidate list of messages fits the budget.

    Returns:
        The kept messages and how many turns were dropped. The result may still not fit when
        the system prompt plus the last turn alone are too long; the caller decides what then.
    """
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    system = list(messages[:head])
    starts = [i for i in range(head, len(messages)) if messages[i]["role"] == "user"]
    if not starts or starts[0] != head:
        starts.insert(0, head)
    dropped = 0
    while True:
        kept = system + list(messages[starts[dropped] :])
        if dropped >= len(starts) - 1 or fits(kept):
            if dropped:
                log.info("dropped the %d oldest turn(s) to fit the context", dropped)
            return kept, dropped
        dropped += 1
