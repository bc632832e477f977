"""Tokenization as the reference does it: the model's tokenizer.json, truncated at the reference max length.

sentence-transformers calls the transformers fast tokenizer with ``truncation="longest_first"`` at
``max_length``; the fast tokenizer is this same ``tokenizers`` object with that truncation set and
the template (special tokens, pair layout) from tokenizer.json's own post-processor. Fixed padding
or truncation stored in tokenizer.json is removed, as transformers does when it loads the file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from granite_rt.arguments import is_int
from granite_rt.errors import ModelFileError

if TYPE_CHECKING:
    from granite_rt.model_folder import ModelSpec

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def check_texts(texts: Sequence[Any], what: str = "texts") -> list[str]:
    """Every item must be a str; the error names the offending index."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is {type(text).__name__}, expected str")
    return list(texts)


def check_max_query_tokens(max_query_tokens: int | None) -> None:
    """None or a positive int; ValueError naming the argument otherwise."""
    if max_query_tokens is not None and (not is_int(max_query_tokens) or max_query_tokens < 1):
        raise ValueError(f"max_query_tokens must be None or an int >= 1, got {max_query_tokens!r}")


def _untokenizable(items: Sequence[str | tuple[str, str]], what: str) -> ValueError | None:
    """A ValueError naming the first item with text the tokenizer cannot take (lone surrogates)."""
    for i, item in enumerate(items):
        for text in (item,) if isinstance(item, str) else item:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                return ValueError(f"{what}[{i}] is not valid Unicode ({exc.reason} at position {exc.start}): "
                                  "lone surrogates cannot be tokenized")
    return None


class Tokenizer:
    """Batch-encodes texts and (query, document) pairs with the model's tokenizer, truncating at max_length."""

    def __init__(self, folder: Path, max_length: int, *, do_lower_case: bool = False,
                 truncation_side: str = "right", parallel: bool = True) -> None:
        self.max_length = max_length
        # parallel: the library's encode_batch (its own pool, one thread per logical CPU); else one text
        # at a time on the calling thread, for a caller that caps the threads it uses (same encodings).
        self.parallel = parallel
        self._path, self._do_lower_case = folder / "tokenizer.json", do_lower_case
        self._tok = _load(self._path, do_lower_case)
        self._tok.enable_truncation(max_length, strategy="longest_first", direction=truncation_side)
        self._truncation_side = truncation_side
        self.pad_id = _pad_id(folder, self._tok)
        # A second copy without truncation, loaded on first use (long-text windows, token counts,
        # max_query_tokens): a large vocabulary costs tens of MB and a fraction of a second to load.
        self._untruncated_tok = None
        self._untruncated_lock = threading.Lock()

    @classmethod
    def for_spec(cls, folder: Path, spec: "ModelSpec", max_length: int | None = None,
                 parallel: bool = True) -> "Tokenizer":
        """The tokenizer of the model folder ``folder`` as its spec configures it (lower-casing, truncation side),
        truncating at ``max_length`` (default: the spec's)."""
        return cls(folder, spec.max_length if max_length is None else max_length, do_lower_case=spec.do_lower_case,
                   truncation_side=spec.truncation_side, parallel=parallel)

    def untruncated(self):
        """The same tokenizer without truncation (``tokenizers.Tokenizer``), to count tokens."""
        with self._untruncated_lock:
            if self._untruncated_tok is None:
                self._untruncated_tok = _load(self._path, self._do_lower_case)
            return self._untruncated_tok

    def encode(self, texts: Sequence[str], what: str = "texts") -> list:
        """``tokenizers.Encoding`` per text, special tokens added, truncated at max_length."""
        return self._encode_batch(list(texts), what)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], what: str = "pairs",
                     max_query_tokens: int | None = None) -> list:
        """``tokenizers.Encoding`` per pair, in the tokenizer's pair template, longest_first truncation.

        ``max_query_tokens`` first cuts each query to that many tokens (special tokens not counted).
        """
        items = [tuple(p) for p in pairs]
        if max_query_tokens is None:
            return self._encode_batch(items, what)
        queries = self._encode_batch([q for q, _ in items], what, self.untruncated(), add_special_tokens=False)
        docs = self._encode_batch([d for _, d in items], what, self.untruncated(), add_special_tokens=False)
        for query in queries:
            query.truncate(max_query_tokens, direction=self._truncation_side)
        return [self._tok.post_process(q, d) for q, d in zip(queries, docs)]

    def encode_full(self, texts: Sequence[str], what: str = "texts") -> list:
        """``tokenizers.Encoding`` per text with special tokens and every token (no truncation): long-text windows."""
        return self._encode_batch(list(texts), what, self.untruncated())

    def _encode_batch(self, items: list, what: str, tok=None, add_special_tokens: bool = True) -> list:
        tok = self._tok if tok is None else tok
        try:
            if self.parallel:
                return tok.encode_batch(items, add_special_tokens=add_special_tokens)
            return [tok.encode(*(item if isinstance(item, tuple) else (item,)), add_special_tokens=add_special_tokens)
                    for item in items]
        except TypeError:
            error = _untokenizable(items, what)
            if error is None:
                raise
            raise error from None


def _load(path: Path, do_lower_case: bool):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import normalizers

    if not path.is_file():
        raise ModelFileError(f"{path} is missing: granite-rt needs the fast tokenizer file")
    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad files
        raise ModelFileError(f"{path} cannot be read by tokenizers ({exc})") from exc
    tok.no_padding()
    tok.no_truncation()
    if do_lower_case and not _lowercases(tok.normalizer):
        rest = [tok.normalizer] if tok.normalizer is not None else []
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), *rest])
    return tok


def _lowercases(normalizer) -> bool:
    """Whether the normalizer already lowercases (BertNormalizer(lowercase) or a Lowercase step)."""
    if normalizer is None:
        return False
    state = json.loads(normalizer.__getstate__()) if hasattr(normalizer, "__getstate__") else {}
    steps = state.get("normalizers", [state]) if isinstance(state, dict) else []
    return any(s.get("type") == "Lowercase" or (s.get("type") == "BertNormalizer" and s.get("lowercase"))
               for s in steps if isinstance(s, dict))


def _pad_id(folder: Path, tok) -> int:
    """The id transformers pads with: the pad_token of the tokenizer config, else 0."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        token = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and tok.token_to_id(token) is not None:
            return int(tok.token_to_id(token))
    return 0
