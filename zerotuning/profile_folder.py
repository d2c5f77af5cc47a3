"""A profile as a folder, the way adapters travel: ``profile.json`` plus a ``README.md`` model card.

A local folder (or a single ``.json`` file written by ``Profile.save``, the older form) is read
offline. Anything else that reads as a hub id (``name`` or ``owner/name``) is fetched with
huggingface_hub's ``hf_hub_download`` (its cache, its token, its offline mode). ``push_folder``
writes the folder to a temporary directory and uploads exactly those two files, so a
``zerotuning tune`` output folder (itself a profile folder) never uploads its predictions.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic_files import write_text_atomically
from .model_card import render_model_card
from .output_paths import OutputFiles

if TYPE_CHECKING:
    from .profile import Profile

PROFILE_FILE = "profile.json"
CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def save_folder(profile: "Profile", directory: str | Path) -> Path:
    """Write profile.json and its model card into ``directory`` (created if missing), replacing earlier ones as a pair:
    both are written to temporaries first, so a failed write changes neither."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained: {str(directory)!r} exists and is not a folder")
    card = render_model_card(profile)  # before any file: a profile that cannot be rendered writes nothing
    files = OutputFiles("save_pretrained", directory / PROFILE_FILE, (directory / CARD_FILE,), overwrite=True)
    with files.writing() as temporary:
        write_text_atomically(temporary(directory / CARD_FILE), card)
        profile.save(temporary(directory / PROFILE_FILE))
    return directory


def load_folder(
    name_or_path: str | Path,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> "Profile":
    """The profile in a local folder or file, or in hub repository ``name_or_path`` at ``revision``."""
    from .profile import Profile

    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise ValueError(f"from_pretrained: expected a profile folder, file or hub id, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        for name, value in (("revision", revision), ("cache_dir", cache_dir), ("token", token)):
            if value is not None:
                raise ValueError(f"from_pretrained: {name}={value!r} applies to hub ids only, but {str(path)!r} is a local path")
        if path.is_dir():
            file = path / PROFILE_FILE
            if not file.is_file():
                raise FileNotFoundError(
                    f"from_pretrained: folder {str(path)!r} has no {PROFILE_FILE}; expected a folder written by "
                    "Profile.save_pretrained or `zerotuning tune --out`"
                )
            return Profile.load(file)
        return Profile.load(path)
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or not _HUB_ID.match(text) or text.lower().endswith(".json"):
        raise FileNotFoundError(
            f"from_pretrained: {text!r} does not exist, and is not a hub id (name or owner/name) either"
        )
    return Profile.load(_download(text, revision, cache_dir, token, local_files_only))


def push_folder(
    profile: "Profile",
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
):
    """Create the model repository if needed (and the branch ``revision``), upload the folder; the commit info."""
    if not isinstance(repo_id, str) or "/" not in repo_id or not _HUB_ID.match(repo_id):
        raise ValueError(f"push_to_hub: repo_id must read owner/name, got {repo_id!r}")
    HfApi = _hub().HfApi
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="zerotuning-profile-") as folder:
        save_folder(profile, folder)  # before any request: a profile that cannot be written uploads nothing
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or "Upload ZeroTuning profile",
            allow_patterns=[PROFILE_FILE, CARD_FILE],
        )


def _download(repo_id: str, revision, cache_dir, token, local_files_only) -> str:
    hub = _hub()
    try:
        return hub.hf_hub_download(
            repo_id=repo_id,
            filename=PROFILE_FILE,
            repo_type="model",
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
    except Exception as error:  # huggingface_hub's errors: no such repo/file/revision, offline, no network
        at = "" if revision is None else f" at revision {revision!r}"
        raise OSError(
            f"from_pretrained: could not fetch {PROFILE_FILE} of hub repository {repo_id!r}{at} "
            f"({type(error).__name__}: {error}); for a local profile pass an existing folder or file"
        ) from error


def _hub():
    try:
        import huggingface_hub
    except ImportError as error:  # installed with transformers; a bare install may lack it
        raise ImportError("profiles on the hub need huggingface_hub: pip install huggingface_hub") from error
    return huggingface_hub
