"""Exception types: each names what went wrong and what to do about it."""

from __future__ import annotations

import concurrent.futures


class GraniteRTError(Exception):
    """Base class of every error granite-rt raises on purpose."""


class ModelNotFoundError(GraniteRTError, FileNotFoundError):
    """The model folder or Hub repo does not exist or cannot be fetched."""


class ModelFileError(GraniteRTError):
    """A model file is missing, truncated, or does not match the manifest's sha256."""


class UnsupportedModelError(GraniteRTError, ValueError):
    """The checkpoint is of an architecture or layout granite-rt cannot run or export."""


class WrongKindError(UnsupportedModelError):
    """A reranker loaded as an Embedder or an embedder as a Reranker; ``kind`` is what ``model`` is."""

    def __init__(self, message: str, model: str, kind: str) -> None:
        super().__init__(message)
        self.model, self.kind = model, kind


class BackendUnavailableError(GraniteRTError, ImportError):
    """The requested backend (onnxruntime, openvino) is not installed."""


class DeviceUnavailableError(GraniteRTError, RuntimeError):
    """The requested device cannot be used here (no provider, driver or library)."""


class CollectionError(GraniteRTError, ValueError):
    """An evaluation collection (Cranfield or BEIR folder) is missing files or holds malformed records."""


class CorpusError(GraniteRTError, ValueError):
    """A corpus job's input (file, column, row) or output folder cannot be used, or a resume does not match."""


class ExportError(GraniteRTError, RuntimeError):
    """The export stage could not write or convert a model (output folder, converter, quantizer)."""


class ParityError(ExportError):
    """An exported artifact does not reproduce the torch reference within its bound."""


class OutputFolderError(ExportError):
    """The export's --out folder cannot be created or written, or holds files that are not an export."""


class CancelledError(GraniteRTError, concurrent.futures.CancelledError):
    """A call was cancelled (its CancelToken or threading.Event set) before it finished; nothing partial is returned."""


class ModelClosedError(GraniteRTError, RuntimeError):
    """The model was closed (``close()`` or the end of its ``with`` block); its sessions are released."""


class BundleError(GraniteRTError, RuntimeError):
    """``granite-rt bundle`` cannot write its --out folder (not creatable, not writable, or holding other files)."""


class AlreadyCancelledError(GraniteRTError, RuntimeError):
    """``CancelToken.cancel()`` was called on a token that is already cancelled."""


def one_line(err: BaseException | Warning | str, limit: int | None = None) -> str:
    """An error's message on one line (whitespace collapsed), cut to ``limit`` characters; its type's name
    when it has no message."""
    message = " ".join(str(err).split()) or type(err).__name__
    return message if limit is None or len(message) <= limit else message[:limit - 3] + "..."
