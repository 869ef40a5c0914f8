"""Deciding, before any download, whether a Hub repository can be loaded, so that a missing network or a wrong id
fails in seconds with one clear line instead of minutes of retried downloads.

`huggingface_hub` retries every file download on connection errors (about 25 s per file), and loading a model reads
several files, so without a network `from_pretrained("org/model")` spends minutes before one generic error. A single
quick metadata request answers the question first: reachable (load as usual), unreachable with the repository in the
local cache (load with `local_files_only=True`), or not loadable at all ([`HubUnavailable`], saying what was being
fetched and what to do).
"""

import os

from huggingface_hub import constants, model_info, snapshot_download
from huggingface_hub.errors import GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

PROBE_TIMEOUT_S = 10.0
"""Seconds the metadata request may take before the Hub counts as unreachable."""


class HubUnavailable(OSError):
    """A Hub repository can be neither downloaded nor found in the local cache (the message says what to do)."""


def is_cached(repo_id: str) -> bool:
    """Whether a snapshot of `repo_id` is in the local Hugging Face cache."""
    try:
        snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False
    return True


def hub_loading_kwargs(repo_id: str | os.PathLike, what: str, hint: str = "") -> dict:
    """The extra `from_pretrained` / download arguments for loading `what` from `repo_id`, decided with one quick
    request: `{}` (a local directory, or the Hub answers), `{"local_files_only": True}` (offline or unreachable, but
    cached). Raises [`HubUnavailable`] when it cannot be loaded (unreachable and not cached, no such repository, or a
    gated one), naming `what`, the reason and `hint` (e.g. the command-line alternatives).

    Example:
        >>> hub_loading_kwargs(".", "a model")  # a local directory: nothing to fetch
        {}
    """
    if os.path.isdir(repo_id):
        return {}
    repo_id = os.fspath(repo_id)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubUnavailable(_message(what, repo_id, "no such directory, and not a Hub repository id", hint)) from None
    cached = is_cached(repo_id)
    if constants.is_offline_mode():
        if cached:
            return {"local_files_only": True}
        raise HubUnavailable(_message(what, repo_id, "offline mode is on (HF_HUB_OFFLINE) and it is not cached", hint))
    try:
        model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:  # (a kind of RepositoryNotFoundError)
        reason = "the repository is gated: accept its terms on the Hub and log in with `hf auth login`"
        raise HubUnavailable(_message(what, repo_id, reason, hint)) from None
    except RepositoryNotFoundError:
        reason = "no such repository on the Hub (or it is private: log in with `hf auth login`)"
        raise HubUnavailable(_message(what, repo_id, reason, hint)) from None
    except Exception as error:  # noqa: BLE001 - DNS, refused, timeout, a server error: the Hub cannot be asked
        return _unreachable(repo_id, what, hint, cached, error)
    return {}


def _unreachable(repo_id: str, what: str, hint: str, cached: bool, error: Exception) -> dict:
    if cached:
        return {"local_files_only": True}
    detail = (str(error).splitlines() or [type(error).__name__])[0]
    reason = f"the Hub cannot be reached ({detail}) and it is not in the local cache"
    raise HubUnavailable(_message(what, repo_id, reason, hint)) from None


def _message(what: str, repo_id: str, reason: str, hint: str) -> str:
    return f"cannot load {what} {repo_id}: {reason}." + (f" {hint}" if hint else "")


__all__ = ["PROBE_TIMEOUT_S", "HubUnavailable", "hub_loading_kwargs", "is_cached"]
