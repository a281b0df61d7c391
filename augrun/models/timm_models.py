"""timm's models (`model=timm` with `model.name` any `timm.list_models()` name, and the presets vit_tiny_cifar and
deit_tiny): built with timm.create_model from data only (a name and keyword arguments, never a `_target_`), sized for
the dataset (classes, input channels, and the image size for models that take one, such as ViTs).

Pretrained weights come from the Hugging Face hub, once, into its cache; timm reads them as data (safetensors, or
torch.load with weights_only). Offline and not cached, the hub would retry for about a minute: the pre-check looks in
the cache and asks the hub once instead, and says so in one line naming `model.pretrained`.
"""
from __future__ import annotations

import difflib
import importlib.util
import urllib.error
import urllib.request
from typing import Any

from torch import nn

from augrun.errors import ConfigError, first_line

HUB_TIMEOUT_S = 5.0
# create_model's arguments that augrun sets itself, and from what
SET_BY_AUGRUN = {"num_classes": "the dataset's classes", "in_chans": "the dataset's channels",
                 "img_size": "dataset.image_size", "pretrained": "model.pretrained",
                 "drop_path_rate": "model.drop_path_rate"}
INSTALL = "pip install 'augrun[timm]'"


def check_timm_model(name: str, *, pretrained: bool) -> None:
    """timm is installed, knows `name`, and (for pretrained weights) has them cached or can fetch them."""
    if importlib.util.find_spec("timm") is None:
        raise ConfigError("model.source", f"timm is not installed; valid: {INSTALL}, or a model of augrun's own "
                          "(model=resnet18, small_cnn, resnet18_imagenet)")
    import timm
    if not timm.is_model(name):
        names = timm.list_models()
        close = [n for n in names if n.startswith(name)][:3] or difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError("model.name", f"{name!r} is not a timm model; {hint}valid: a name of timm.list_models() "
                          "(e.g. resnet18, vit_tiny_patch16_224, convnext_atto)")
    if pretrained:
        _check_weights_reachable(name)


def _check_weights_reachable(name: str) -> None:
    import timm
    from huggingface_hub import constants, try_to_load_from_cache
    config = timm.models.get_pretrained_cfg(name)
    if config is None or not (config.hf_hub_id or config.url):
        raise ConfigError("model.pretrained", f"true, but timm has no pretrained weights for {name}; valid: "
                          "model.pretrained=false, or a name with weights (timm.list_models(pretrained=True))")
    if config.hf_hub_id:
        repo = config.hf_hub_id.split("@")[0]
        files = ("model.safetensors", config.hf_hub_filename or "pytorch_model.bin", "pytorch_model.bin")
        if any(isinstance(try_to_load_from_cache(repo, file), str) for file in files):
            return
        host = constants.ENDPOINT
    else:
        host = "/".join(config.url.split("/")[:3])
    try:
        urllib.request.urlopen(urllib.request.Request(host, method="HEAD"), timeout=HUB_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # the host answered: timm can ask it for the file
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ConfigError("model.pretrained", f"true, but {name}'s weights are not cached and {host} cannot be "
                          f"reached ({reason}); valid: model.pretrained=false, or network access once (they are "
                          f"cached in {constants.HF_HUB_CACHE})") from None


def build_timm_model(name: str, *, in_channels: int, num_classes: int, image_size: int, pretrained: bool,
                     drop_path_rate: float, options: dict[str, Any]) -> nn.Module:
    """timm.create_model(name) for this dataset. `options`: more of create_model's keyword arguments (patch_size=4)."""
    import timm
    taken = sorted(set(options) & set(SET_BY_AUGRUN))
    if taken:
        raise ConfigError(f"model.options.{taken[0]}", f"is set by augrun ({SET_BY_AUGRUN[taken[0]]}); valid: "
                          "leave it out of model.options")
    arguments = dict(options, num_classes=num_classes, in_chans=in_channels, pretrained=pretrained)
    if drop_path_rate:  # only when asked for: many models (DLA, DenseNet, GhostNet) have no stochastic depth
        arguments["drop_path_rate"] = drop_path_rate
    try:
        return _create(timm, name, image_size, arguments)
    except Exception as error:  # timm checks the user's values with asserts, KeyErrors, ... not one exception type
        raise _blame(error, name, pretrained=pretrained, options=options) from None


def _create(timm, name: str, image_size: int, arguments: dict[str, Any]) -> nn.Module:
    try:  # models that are sized for their input (ViTs, DeiT, Swin) take img_size; the others refuse it
        return timm.create_model(name, img_size=image_size, **arguments)
    except TypeError as error:
        if "img_size" not in str(error):
            raise
        return timm.create_model(name, **arguments)


def _blame(error: Exception, name: str, *, pretrained: bool, options: dict[str, Any]) -> Exception:
    """The ConfigError naming the key that made timm fail to build `name`; `error` itself when no setting explains it
    (a bug, which should keep its traceback)."""
    reason = _reason(error)
    if isinstance(error, TypeError) and "drop_path_rate" in str(error):
        return ConfigError("model.drop_path_rate", f"{name} has no stochastic depth ({reason}); valid: 0.0")
    if pretrained and isinstance(error, OSError):  # weights that could not be fetched or read
        return _weights_error(name, reason)
    if options:  # any failure while timm takes the user's options in: out of range, unknown, inconsistent
        return options_error(name, options, reason)
    if pretrained and isinstance(error, RuntimeError):  # weights that do not match the model
        return _weights_error(name, reason)
    return error


def options_error(name: str, options: dict[str, Any], reason: str) -> ConfigError:
    """model.options that timm refused, as it built the model or in its first step."""
    given = ", ".join(f"{key}={value}" for key, value in options.items())
    return ConfigError("model.options", f"{name} fails with {given} ({reason}); valid: keyword arguments of {name}'s "
                       "timm class, with values it accepts")


def _weights_error(name: str, reason: str) -> ConfigError:
    return ConfigError("model.pretrained", f"true, but {name}'s weights could not be loaded ({reason}); valid: "
                       "model.pretrained=false, or fetch them again (delete them from the Hugging Face cache)")


def _reason(error: Exception) -> str:
    """The error's first line, short, with its type where the message alone says little (a KeyError's is the key)."""
    text = " ".join(first_line(error).split())[:200]
    return text if isinstance(error, (TypeError, OSError, RuntimeError)) else f"{type(error).__name__}: {text}"
