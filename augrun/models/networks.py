"""Model registry: a name from the config -> a network for the dataset's channels and classes (the book's CIFAR
ResNet-18, a small CNN, torchvision's ImageNet ResNet-18 with optional pretrained weights)."""
from __future__ import annotations

from torch import nn

from augrun.config.schema import ModelConfig
from augrun.errors import ConfigError
from augrun.models.weights import torchvision_state_dict
from augrun.registry import Registry


class Residual(nn.Module):
    """The book's residual block (d2l 8.6): two 3x3 convs, an optional 1x1 conv on the shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, *, use_1x1conv: bool = False, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return self.relu(y + x)


def _stage(in_channels: int, out_channels: int, *, first: bool) -> nn.Sequential:
    if first:  # the first stage keeps the resolution: the stem already matched the channel count
        return nn.Sequential(Residual(in_channels, out_channels), Residual(out_channels, out_channels))
    return nn.Sequential(Residual(in_channels, out_channels, use_1x1conv=True, stride=2),
                         Residual(out_channels, out_channels))


def _xavier_init(module: nn.Module) -> None:
    # the book's init_weights in 14.1: Xavier-uniform for every Linear and Conv2d weight, biases left at PyTorch's default
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


MODELS = Registry("model.name", "model")


@MODELS.register("resnet18")
def resnet18(*, in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """The book's ResNet-18 for small images (d2l 14.1): 3x3 stride-1 stem, no max-pool, four stages of two blocks."""
    widths = [width, 2 * width, 4 * width, 8 * width]
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
        _stage(width, widths[0], first=True),
        *(_stage(a, b, first=False) for a, b in zip(widths, widths[1:])),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(widths[-1], num_classes),
    )
    net.apply(_xavier_init)
    return net


@MODELS.register("small_cnn")
def small_cnn(*, in_channels: int, num_classes: int, width: int = 32) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head: enough to learn CIFAR to ~70 % on a CPU in minutes."""
    def block(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]

    net = nn.Sequential(
        *block(in_channels, width), nn.MaxPool2d(2),
        *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(), nn.Linear(4 * width, num_classes),
    )
    net.apply(_xavier_init)
    return net


@MODELS.register("resnet18_imagenet")
def resnet18_imagenet(*, in_channels: int, num_classes: int, width: int = 64, pretrained: bool = False) -> nn.Module:
    """torchvision's ResNet-18 for photos: 7x7 stride-2 stem, max-pool, four stages (He et al. 2016); `pretrained`:
    from torchvision's ImageNet weights (its weights API: downloaded once into torch's hub cache), with a new
    classifier for num_classes (and, for grayscale, the stem's filters summed over RGB)."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as torchvision_resnet18
    if width != 64:
        raise ConfigError("model.width", f"got {width}; valid: 64 (torchvision's ResNet-18 has fixed widths; "
                          "model=resnet18 takes any width)")
    net = torchvision_resnet18(weights=None, num_classes=1000)
    if pretrained:
        weights = ResNet18_Weights.DEFAULT
        try:
            net.load_state_dict(torchvision_state_dict(weights, key="model.pretrained"))
        except (OSError, RuntimeError) as error:  # offline (URLError is an OSError), a download cut short, a mismatch
            reason = " ".join(str(getattr(error, "reason", error)).split()) or type(error).__name__
            raise ConfigError("model.pretrained", f"true, but torchvision's {weights} could not be loaded ({reason}); "
                              f"valid: model.pretrained=false, or network access once (it is cached in "
                              f"{_hub_checkpoints()})") from None
    if in_channels != 3:
        stem = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if pretrained:
            stem.weight.data.copy_(net.conv1.weight.data.sum(dim=1, keepdim=True).expand_as(stem.weight))
        net.conv1 = stem
    if num_classes != 1000 or not pretrained:
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def _hub_checkpoints() -> str:
    import torch
    return f"{torch.hub.get_dir()}/checkpoints"


def build_model(model: ModelConfig, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The model a config names, for this dataset: one of augrun's, or timm's (model.source=timm)."""
    if model.source == "timm":
        from augrun.models.timm_models import build_timm_model
        return build_timm_model(model.name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                                pretrained=model.pretrained, drop_path_rate=model.drop_path_rate, options=model.options)
    builder = MODELS.get(model.name)
    for key, value, unset in (("model.drop_path_rate", model.drop_path_rate, 0.0), ("model.options", model.options, {})):
        if value != unset:
            raise ConfigError(key, f"{value} is for timm's models; valid: {unset} for {model.name}, or model=timm")
    if model.pretrained and model.name != "resnet18_imagenet":
        raise ConfigError("model.pretrained", f"true, but {model.name} has no pretrained weights; valid: "
                          "model.pretrained=false, model=resnet18_imagenet, or a timm model")
    extra = {"pretrained": model.pretrained} if model.name == "resnet18_imagenet" else {}
    return builder(in_channels=in_channels, num_classes=num_classes, width=model.width, **extra)
