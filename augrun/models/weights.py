"""Weight files read as data, never as code: every file augrun loads with torch (its own checkpoints, and the
libraries' caches: torchvision's downloads in torch's hub folder) goes through `load_as_data`, torch.load with
weights_only, so that a crafted file cannot run its code when it is read, and a bad one is one line naming the file
and how to get a good one.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from augrun.errors import ConfigError, UserError

# the boilerplate lines of torch.load's weights_only errors
TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation of torch.load")


def load_as_data(path: Path, *, error: type[UserError], key: str, what: str, remedy: str) -> Any:
    """torch.load(path) with weights_only: tensors and plain values. `what` names the file's kind in the message ("an
    augrun checkpoint"), `remedy` says how to get a good one; `error` (a UserError) names `key`."""
    try:
        with warnings.catch_warnings():  # torch warns (3 lines) about a plain pickle before refusing it in one
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refused:
        if "GLOBAL" not in str(refused):  # not a pickle at all: damaged, or some other kind of file
            raise error(key, f"{path} is corrupt or unreadable ({first_informative_line(refused)}); {remedy}") from None
        # weights_only refused a global: the file asks to run code
        raise error(key, f"{path} is not {what}: it holds Python objects that are only loadable by running code "
                    f"({first_informative_line(refused, 'global')}), and weight files are loaded as data; "
                    f"{remedy}") from None
    except Exception as damaged:  # torch raises many types for a damaged zip/pickle
        raise error(key, f"{path} is corrupt or unreadable ({first_informative_line(damaged)}); {remedy}") from None


def first_informative_line(error: BaseException, marker: str | None = None) -> str:
    """The informative line of torch's error: its weights_only message is a page of advice (including 'set
    weights_only=False', which is exactly what augrun must not do) around one line naming the problem."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(TORCH_ADVICE)]
    if marker:
        informative = [line for line in informative if marker in line.lower()] or informative
    return (informative or lines or [type(error).__name__])[0]


def torchvision_state_dict(weights, *, key: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision `weights` (a Weights enum member), from torch's hub cache, downloaded there first
    when missing (hash-checked, as torchvision does): read as data. torchvision's own get_state_dict unpickles the
    cached file in full, so that a file planted there would run its code."""
    from urllib.parse import urlparse

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        found = torch.hub.HASH_REGEX.search(path.name)
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=found.group(1) if found else None,
                                       progress=False)
    remedy = f"valid: delete {path} so that it is downloaded again (from {weights.url}), or {key}=false"
    state = load_as_data(path, error=ConfigError, key=key, what=f"torchvision's {weights}", remedy=remedy)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConfigError(key, f"{path} is not a state dict of tensors; {remedy}")
    return state
