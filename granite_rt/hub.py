"""Model names → local folder or Hugging Face Hub repo, and Hub downloads that fail at once, in one line.

A name the user meant as a local folder (``./x``, ``~/x``, ``models/x`` when ``models`` exists here)
never goes to the Hub: a missing one is "folder … does not exist". A Hub id is looked up with ONE
request and no retries (huggingface_hub's own calls retry a dead connection for ~24 s, printing a
line per retry); unreachable, the local cache is tried, and what fails is said in the user's terms
instead of quoting huggingface_hub's advice (``pass 'local_files_only=False'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from granite_rt.errors import ModelNotFoundError

# The Hub's repo-id rule: org/name, each of letters, digits, '-', '_', '.', not starting with '-' or '.'.
_REPO_ID = re.compile(r"[A-Za-z0-9_][\w.-]*/[A-Za-z0-9_][\w.-]*")
# Seconds the single lookup request may take before the Hub counts as unreachable.
LOOKUP_TIMEOUT_S = 10.0


def looks_like_path(name: str) -> bool:
    """True for a name the user meant as a local path rather than a Hub repo id.

    ``./``, ``../``, ``/`` or ``~`` at the start, a Windows separator or drive, more than one ``/``,
    or a first component that exists here (``models/x`` where ``models/`` is a local folder).
    """
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    if "\\" in name or re.match(r"[A-Za-z]:", name) or name.count("/") > 1:
        return True
    first = name.split("/", 1)[0]
    return "/" in name and Path(first).exists()


def is_hub_id(name: str) -> bool:
    """True for ``org/name`` strings that are not meant as a local path (see looks_like_path)."""
    return bool(_REPO_ID.fullmatch(name)) and not looks_like_path(name)


def local_folder_error(model: str | os.PathLike) -> ModelNotFoundError:
    """The one-line error for a model that is neither an existing folder nor a Hub id."""
    path = Path(model).expanduser()
    if path.exists():
        return ModelNotFoundError(f"{str(model)!r} is a file, not a model folder")
    if isinstance(model, str) and not looks_like_path(model) and "/" not in model:
        return ModelNotFoundError(f"folder {model!r} does not exist (and it is not a Hugging Face Hub id, "
                                  "which reads org/name)")
    return ModelNotFoundError(f"folder {str(model)!r} does not exist")


def offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once at import)."""
    try:
        from huggingface_hub import constants
    except ImportError as exc:  # a frozen app leaves the Hub client out (granite_rt/_pyinstaller)
        raise ModelNotFoundError(f"huggingface_hub cannot be imported ({exc}), so no Hub id can be loaded: give a "
                                 "model folder or bundle (granite-rt bundle), or install huggingface_hub (in a "
                                 "frozen app: import it in the app)") from exc

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class Lookup:
    """What one request to the Hub said about a repo."""

    repo_id: str
    files: list[str] | None       # the repo's file names; None when the Hub was not asked or not reached
    unreachable: str | None = None  # why the Hub could not be asked (None: it answered, or offline mode)

    @property
    def cached_only(self) -> bool:
        return self.files is None


def lookup(repo_id: str, revision: str | None = None) -> Lookup:
    """Ask the Hub once (no retries) for the repo's files; ModelNotFoundError when it says there is no such repo."""
    if offline():
        return Lookup(repo_id, None)
    import huggingface_hub
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = huggingface_hub.model_info(repo_id, revision=revision, timeout=LOOKUP_TIMEOUT_S)
    except GatedRepoError:
        raise ModelNotFoundError(f"{repo_id!r} is a gated repo on the Hugging Face Hub: accept its terms at "
                                 f"https://huggingface.co/{repo_id} and log in with 'hf auth login'") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"the Hugging Face Hub repo {repo_id!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"no folder {repo_id!r} here, and the Hugging Face Hub has no repo {repo_id!r} "
                                 "(a private repo needs 'hf auth login')") from None
    except Exception as exc:  # noqa: BLE001 - no connection, timeout, Hub down: the cache may still have it
        return Lookup(repo_id, None, unreachable=_short(exc))
    files = [s.rfilename for s in info.siblings] if info.siblings is not None else None
    return Lookup(repo_id, files, unreachable=None if files is not None else "the Hub listed no files")


def download(found: Lookup, revision: str | None = None, *, allow_patterns: list[str] | None = None,
             ignore_patterns: list[str] | None = None) -> Path:
    """The repo's snapshot folder: downloaded when the Hub answered, else from the local cache."""
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        folder = huggingface_hub.snapshot_download(found.repo_id, revision=revision, allow_patterns=allow_patterns,
                                                   ignore_patterns=ignore_patterns, local_files_only=found.cached_only)
    except LocalEntryNotFoundError:
        raise _not_cached(found) from None
    except Exception as exc:  # noqa: BLE001 - a failed download: one line, the cause chained for --debug
        raise ModelNotFoundError(f"could not download {found.repo_id!r} from the Hugging Face Hub: "
                                 f"{_short(exc)}") from exc
    return Path(folder)


def _not_cached(found: Lookup) -> ModelNotFoundError:
    if found.unreachable is None:  # offline mode: the Hub was not asked
        why = "HF_HUB_OFFLINE is set, and it is not in the local Hugging Face cache"
    else:
        why = f"the Hugging Face Hub is not reachable ({found.unreachable}), and it is not in the local cache"
    return ModelNotFoundError(f"no folder {found.repo_id!r} here; {why}")


def _short(exc: BaseException) -> str:
    """The first line of an exception's message, with its type when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
