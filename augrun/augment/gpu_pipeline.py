"""Turns a config's op specs into the objects that run them on the training device: the gpu backend's per-image
pipeline (`build_pipeline`) and the label-mixing batch ops (`build_batch_op`, which both backends run there).

Its own module so that gpu.py stays a plain library of torch ops that knows nothing of configs; every caller that runs
a config's ops on the device builds them here, so they cannot drift apart.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from augrun.augment.gpu import BATCH_OP_CLASSES, GPU_OPS, GpuPipeline
from augrun.augment.ops import OpSpec
from augrun.errors import ConfigError, first_line


def build_pipeline(specs: Sequence[OpSpec]) -> GpuPipeline:
    """The gpu backend's per-image ops for `specs`, in their order: ``pipeline(images, generator) -> images`` on a
    float batch in [0, 1]. The caller converts uint8 images (augrun.augment.pixels.to_float) and owns the generator:
    each seeds it for its own purpose (a training step, a preview, a dry run).

    An op whose gpu version refuses an argument that torchvision accepts (RandomResizedCrop with an interpolation other
    than bilinear) raises a ConfigError naming its key, so the message says which line of the config to change."""
    return GpuPipeline([_build_gpu_op(spec) for spec in specs])


def _build_gpu_op(spec: OpSpec) -> Callable:
    try:
        return GPU_OPS[spec.name](**spec.kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(spec.key, first_line(error)) from None


def build_batch_op(spec: OpSpec, *, num_classes: int) -> Callable:
    """A batch op (MixUp, CutMix) as the device runs it, for both backends: ``op(images, labels, generator) ->
    (images, soft targets)``. num_classes comes from the dataset unless the config gives it, as torchvision needs it
    to one-hot integer labels."""
    return BATCH_OP_CLASSES[spec.name](**{"num_classes": num_classes, **spec.kwargs})
