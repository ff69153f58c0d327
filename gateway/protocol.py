"""The OpenAI chat-completions request, validated without losing a byte of what the caller sent.

Validation uses pydantic (strict types, so "0.5" is not a temperature), but the request forwarded to
the tier is the caller's own JSON object with only `model` rewritten: fields tiergate does not know
are passed through, and reported back in a header so they are never dropped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from gateway.prompt_tokens import PromptSize

# Strict mode still accepts JSON integers for floats, but never strings.
Number = float


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


# The rules below that span fields, written once more as JSON Schema so that the OpenAPI document
# promises exactly what the server accepts (a schema-valid request is never a 400).
_CONTENT_RULE: dict[str, Any] = {
    "anyOf": [
        {"properties": {"role": {"const": "assistant"}}},
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["tool_calls"]},
    ],
    "description": "content is required (not null) unless the role is assistant or the message has tool_calls.",
}
_REQUEST_RULES: dict[str, Any] = {
    "allOf": [
        {
            "anyOf": [
                {"not": {"required": ["stream_options"]}},
                {"properties": {"stream_options": {"type": "null"}}},
                {"required": ["stream"], "properties": {"stream": {"const": True}}},
            ]
        },
        {
            "anyOf": [
                {"not": {"required": ["top_logprobs"]}},
                {"properties": {"top_logprobs": {"enum": [None, 0]}}},
                {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
            ]
        },
    ]
}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_CONTENT_RULE)

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> Message:
        extra = self.__pydantic_extra__ or {}
        if self.content is None and self.role != "assistant" and "tool_calls" not in extra:
            raise ValueError("content is required for this role")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None


_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")


class ChatCompletionRequest(BaseModel):
    """The fields tiergate checks. Everything else travels as the caller sent it."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_REQUEST_RULES)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Number | None = Field(default=None, ge=0.0, le=1.0)
    n: StrictInt | None = Field(default=None, ge=1, le=128)
    presence_penalty: Number | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: Number | None = Field(default=None, ge=-2.0, le=2.0)
    seed: StrictInt | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        # JSON has one number type: 2.0 is the integer 2 (JSON Schema agrees); 2.5 and "2" stay errors.
        # A model validator, not a per-field one, so the fields' JSON Schema keeps its bounds.
        if not isinstance(data, dict):
            return data
        whole = {f: int(v) for f in _INTEGER_FIELDS if isinstance(v := data.get(f), float) and v.is_integer()}
        return {**data, **whole} if whole else data

    # Field validators rather than one model validator, so the error names the field (`param`);
    # each sees the fields declared before it in `info.data`.
    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and info.data.get("stream") is not True:
            raise ValueError("stream_options is only allowed when stream is true")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and info.data.get("logprobs") is not True:
            raise ValueError("top_logprobs requires logprobs to be true")
        return value


KNOWN_FIELDS = frozenset(ChatCompletionRequest.model_fields)


# --- What the gateway answers. The tier's own JSON is relayed with `model` renamed, so these models
# describe the answer (for the OpenAPI document) rather than re-validate it on the hot path.


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: dict[str, Any]
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    """A non-streaming answer: the tier's, with `model` set to the tier's name."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str = Field(description="The tier that answered.")
    choices: list[Choice]
    usage: Usage | None = None


class ChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    delta: dict[str, Any]
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed answer; the stream ends with `data: [DONE]`."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str = Field(description="The tier that answers.")
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, description="Last chunk only, when stream_options.include_usage.")


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, overloaded_error.")
    param: str | None = Field(description="The request field at fault, when there is one.")
    code: str | None


class ErrorResponse(BaseModel):
    """Every error the gateway answers, in OpenAI's shape (gateway.errors renders it)."""

    error: ErrorDetail


class ParsedRequest:
    """A validated request: the checked view plus the caller's original JSON object."""

    __slots__ = ("_text", "body", "checked", "prompt_size", "unknown_fields")

    def __init__(self, body: dict[str, Any], checked: ChatCompletionRequest) -> None:
        self.body = body
        self.checked = checked
        self.unknown_fields = sorted(k for k in body if k not in KNOWN_FIELDS)
        self._text: str | None = None
        # The prompt's token counts, made once per request (gateway.limits.prompt_size).
        self.prompt_size: PromptSize | None = None

    @property
    def stream(self) -> bool:
        return bool(self.checked.stream)

    @property
    def max_tokens(self) -> int | None:
        c = self.checked
        return c.max_completion_tokens if c.max_completion_tokens is not None else c.max_tokens

    def routing_text(self) -> str:
        """The text a router reads: every message's text content, in order."""
        if self._text is not None:
            return self._text
        parts: list[str] = []
        for msg in self.checked.messages:
            content = msg.content
            if isinstance(content, str):
                parts.append(content)
            elif content:
                parts.extend(str(p.get("text", "")) for p in content if p.get("type") == "text")
        self._text = "\n".join(parts)
        return self._text

    def counted_text(self) -> str:
        """The text the prompt's tokens are counted over: the messages' text, and tool definitions
        (chat templates render them into the prompt)."""
        tools = self.checked.tools
        return self.routing_text() if not tools else self.routing_text() + "\n" + orjson.dumps(tools).decode()

    def upstream_body(self, upstream_model: str, *, force_usage: bool) -> bytes:
        """The caller's JSON with `model` rewritten; usage is requested upstream for metrics."""
        body = dict(self.body)
        body["model"] = upstream_model
        if force_usage and self.stream:
            opts = dict(body.get("stream_options") or {})
            opts["include_usage"] = True
            body["stream_options"] = opts
        return orjson.dumps(body)


def _param_of(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # Union members appear in pydantic's path ('str', 'list[...]'); they are not fields.
            if part in {"str", "list[str]", "list[dict[str,any]]", "dict[str,any]"} or "[" in part:
                continue
            out += f".{part}" if out else part
    return out


def parse_chat_request(raw: bytes) -> ParsedRequest:
    """Parse and validate a request body; every failure is a 400 naming the offending field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    try:
        checked = ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        errors = err.errors(include_url=False, include_input=False)
        first = errors[0]
        param = _param_of(tuple(first["loc"])) or None
        # A union (stop: str | list) reports one error per member: prefer the rule a member broke
        # ("at most 4 items") over the first member's type mismatch ("should be a valid string").
        same_field = [e for e in errors if (_param_of(tuple(e["loc"])) or None) == param]
        first = next((e for e in same_field if not e["type"].endswith("_type")), first)
        msg = first["msg"]
        raise InvalidRequest(f"Invalid value for '{param}': {msg}" if param else msg, param=param) from None
    return ParsedRequest(body, checked)
