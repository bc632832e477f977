"""Request bodies of the TEI- and OpenAI-compatible endpoints, parsed and validated.

Field names, defaults and accepted shapes follow Hugging Face Text Embeddings Inference
(router/src/http/types.rs) and OpenAI's ``POST /v1/embeddings``. Every problem raises a
``RequestError`` naming the offending field; the app turns it into a JSON error response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import GraniteRTError


class RequestError(GraniteRTError):
    """A request the server refuses; ``status`` and ``field`` go into the HTTP answer."""

    status = 422
    error_type = "Validation"

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InvalidRequestError(RequestError):
    """The body is not JSON, or a field has the wrong type or value (HTTP 422)."""


class PayloadTooLargeError(RequestError):
    """Too many bytes, too many inputs, or an input longer than the model takes (HTTP 413)."""

    status = 413


class UnsupportedMediaTypeError(RequestError):
    """The body is declared as something other than JSON (HTTP 415, as TEI answers)."""

    status = 415


@dataclass(frozen=True)
class Limits:
    """What one request may contain."""

    max_request_bytes: int = 2_000_000      # TEI's default payload limit
    max_inputs: int = 256                   # texts per request (TEI: max_client_batch_size)


@dataclass(frozen=True)
class EmbedRequest:
    """TEI ``POST /embed``, and OpenAI ``POST /v1/embeddings`` mapped onto it."""

    texts: list[str]
    normalize: bool = True
    truncate: bool | None = None            # None: the server's --auto-truncate
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"   # OpenAI only
    model: str | None = None                                 # OpenAI only, echoed back


@dataclass(frozen=True)
class RerankRequest:
    """TEI ``POST /rerank``."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    top_n: int | None = None
    truncate: bool | None = None


@dataclass(frozen=True)
class PredictRequest:
    """TEI ``POST /predict`` on a reranker: (query, text) pairs to score."""

    pairs: list[tuple[str, str]]
    single: bool                            # one pair sent (answer: one list of predictions)
    raw_scores: bool = False
    truncate: bool | None = None


@dataclass(frozen=True)
class TokenizeRequest:
    """TEI ``POST /tokenize``."""

    texts: list[str]
    add_special_tokens: bool = True


@dataclass(frozen=True)
class DecodeRequest:
    """TEI ``POST /decode``."""

    ids: list[list[int]]
    skip_special_tokens: bool = True


def check_content_type(content_type: str | None) -> None:
    """JSON or undeclared; anything else (a form, text/plain) is refused as TEI refuses it."""
    if content_type is None:
        return
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError("content-type", f"the body must be JSON: send 'Content-Type: application/json' "
                                                        f"(got {content_type!r})")


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidRequestError("body", f"the request body is not valid JSON: {err}") from None
    except RecursionError:
        raise InvalidRequestError("body", "the request body nests arrays or objects too deeply") from None
    except ValueError as err:  # an integer of more digits than Python converts (4300)
        reason = str(err).split(";")[0]
        raise InvalidRequestError("body", f"the request body has a number this server cannot read ({reason})") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("body", f"the request body must be a JSON object, got {_kind(data)}")
    return data


def parse_embed(data: dict[str, Any], limits: Limits) -> EmbedRequest:
    _unsupported(data, "prompt_name")
    _right_truncation(data)
    return EmbedRequest(
        texts=_texts(data, "inputs", limits),
        normalize=_get(data, "normalize", bool, True),
        truncate=_get(data, "truncate", bool, None),
        dimensions=_positive(data, "dimensions"),
    )


def parse_openai(data: dict[str, Any], limits: Limits) -> EmbedRequest:
    _unsupported(data, "prompt_name")
    _right_truncation(data)
    fmt = _get(data, "encoding_format", str, "float")
    if fmt not in ("float", "base64"):
        raise InvalidRequestError("encoding_format", f'encoding_format must be "float" or "base64", got {fmt!r}')
    return EmbedRequest(
        texts=_texts(data, "input", limits),
        dimensions=_positive(data, "dimensions"),
        encoding_format=fmt,
        model=_get(data, "model", str, None),
    )


def parse_rerank(data: dict[str, Any], limits: Limits) -> RerankRequest:
    if data.get("query") is None:
        raise InvalidRequestError("query", "missing field query (a string)")
    _right_truncation(data)
    return RerankRequest(
        query=_text(_get(data, "query", str, ""), "query"),
        texts=_texts(data, "texts", limits, allow_single=False),
        raw_scores=_get(data, "raw_scores", bool, False),
        return_text=_get(data, "return_text", bool, False),
        top_n=_positive(data, "top_n"),
        truncate=_get(data, "truncate", bool, None),
    )


def parse_predict(data: dict[str, Any], limits: Limits) -> PredictRequest:
    """``inputs``: one [query, text] pair or a list of them (TEI also takes lone strings, which a
    cross-encoder does not score)."""
    if "inputs" not in data:
        raise InvalidRequestError("inputs", "missing field inputs (a [query, text] pair or a list of pairs)")
    value = data["inputs"]
    single = isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
    items = [value] if single else value
    if not isinstance(items, list) or not items:
        raise InvalidRequestError("inputs", f"inputs must be a [query, text] pair or a non-empty list of pairs, "
                                            f"got {_kind(value) if not isinstance(value, list) else 'an empty list'}")
    if len(items) > limits.max_inputs:
        raise _too_many("inputs", len(items), limits)
    pairs = []
    for i, pair in enumerate(items):
        name = "inputs" if single else f"inputs[{i}]"
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise InvalidRequestError(name, f"{name} must be a [query, text] pair of strings, got {_kind(pair)}"
                                            + (f" of length {len(pair)}" if isinstance(pair, list) else "")
                                            + "; this server serves a reranker, which scores pairs")
        pairs.append((_text(pair[0], f"{name}[0]"), _text(pair[1], f"{name}[1]")))
    return PredictRequest(pairs=pairs, single=single, raw_scores=_get(data, "raw_scores", bool, False),
                          truncate=_get(data, "truncate", bool, None))


def parse_decode(data: dict[str, Any], limits: Limits, vocab_size: int) -> DecodeRequest:
    """``ids``: a list of token ids or a list of such lists."""
    if "ids" not in data:
        raise InvalidRequestError("ids", "missing field ids (a list of token ids, or a list of such lists)")
    value = data["ids"]
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("ids", f"ids must be a non-empty list of token ids or of lists of them, "
                                         f"got {_kind(value) if not isinstance(value, list) else 'an empty list'}")
    single = not isinstance(value[0], list)
    batch = [value] if single else value
    if len(batch) > limits.max_inputs:
        raise _too_many("ids", len(batch), limits)
    for i, ids in enumerate(batch):
        name = "ids" if single else f"ids[{i}]"
        if not isinstance(ids, list):
            raise InvalidRequestError(name, f"{name} must be a list of token ids, got {_kind(ids)}")
        for j, token in enumerate(ids):
            if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab_size:
                raise InvalidRequestError(f"{name}[{j}]", f"{name}[{j}] must be a token id from 0 to {vocab_size - 1}, "
                                                          f"got {short_value(token)}")
    return DecodeRequest(ids=batch, skip_special_tokens=_get(data, "skip_special_tokens", bool, True))


def parse_tokenize(data: dict[str, Any], limits: Limits) -> TokenizeRequest:
    _unsupported(data, "prompt_name")
    return TokenizeRequest(
        texts=_texts(data, "inputs", limits),
        add_special_tokens=_get(data, "add_special_tokens", bool, True),
    )


def _texts(data: dict[str, Any], name: str, limits: Limits, allow_single: bool = True) -> list[str]:
    """A string or a non-empty list of strings, at most ``limits.max_inputs`` of them."""
    if name not in data:
        raise InvalidRequestError(name, f"missing field {name} (a string or a list of strings)")
    value = data[name]
    if isinstance(value, str) and allow_single:
        return [_text(value, name)]
    if not isinstance(value, list):
        expected = "a string or a list of strings" if allow_single else "a list of strings"
        raise InvalidRequestError(name, f"{name} must be {expected}, got {_kind(value)}")
    if not value:
        raise InvalidRequestError(name, f"{name} must not be empty")
    if len(value) > limits.max_inputs:
        raise _too_many(name, len(value), limits)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = " (token-id input is not supported; send text)" if isinstance(item, (int, list)) else ""
            raise InvalidRequestError(f"{name}[{i}]", f"{name}[{i}] must be a string, got {_kind(item)}{hint}")
        _text(item, f"{name}[{i}]")
    return value


def _too_many(name: str, n: int, limits: Limits) -> PayloadTooLargeError:
    return PayloadTooLargeError(name, f"{name} holds {n} items, more than the {limits.max_inputs} this server "
                                      "takes per request (--max-client-batch-size); split the request")


def _text(value: str, name: str) -> str:
    """``value`` if it is valid Unicode (JSON can carry lone surrogates such as "\\ud800"; no tokenizer takes them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidRequestError(name, f"{name} is not valid Unicode ({err.reason} at character {err.start}): "
                                        "lone surrogates cannot be tokenized") from None
    return value


def short_value(value: Any) -> str:
    """A value for an error message, cut to 40 characters (an integer may have thousands of digits)."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "a very large integer"
    return text if len(text) <= 40 else text[:37] + "..."


def _get(data: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """``data[name]`` if present and not null, checked to be of ``kind`` (bool is not an int)."""
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidRequestError(name, f"{name} must be {_KIND_NAMES[kind]}, got {_kind(value)}")
    return value


def _positive(data: dict[str, Any], name: str) -> int | None:
    value = _get(data, name, int, None)
    if value is not None and value < 1:
        raise InvalidRequestError(name, f"{name} must be a positive integer, got {short_value(value)}")
    return value


def _unsupported(data: dict[str, Any], name: str) -> None:
    if data.get(name) is not None:
        raise InvalidRequestError(name, f"{name} is not supported by this server; prepend the prompt to the text")


def _right_truncation(data: dict[str, Any]) -> None:
    direction = _get(data, "truncation_direction", str, "right")
    if direction.lower() != "right":
        raise InvalidRequestError("truncation_direction",
                                  f'only truncation_direction "right" is supported, got {direction!r}')


_KIND_NAMES = {bool: "a boolean", int: "an integer", str: "a string"}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
