"""Weight files are read as data (augrun.models.weights): a file in torch's hub cache that would run code when
unpickled, or a damaged one, is one line naming the file and how to fetch it again, and its code never runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, assert_user_error, run_augrun

from augrun.config.schema import ModelConfig
from augrun.errors import ConfigError
from augrun.models.networks import build_model
from augrun.run import checkpoint

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1, as cached by torch.hub


class RunsCode:
    """Unpickling this runs os.system: what a crafted weight file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path: Path, marker: Path) -> None:
    torch.save({"conv1.weight": RunsCode(marker)}, path)


def planted(torch_home: Path, write) -> Path:
    path = torch_home / "hub" / "checkpoints" / RESNET18_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    return path


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.mark.parametrize("content", ["crafted", "junk", "truncated", "a list", "not tensors"])
def test_a_bad_cached_torchvision_weight_file_is_one_line_and_runs_nothing(content, torch_home: Path, tmp_path: Path):
    marker = tmp_path / "code-ran"
    writers = {
        "crafted": lambda path: crafted(path, marker),
        "junk": lambda path: path.write_bytes(b"\x00 not a torch file" * 10),
        "truncated": lambda path: path.write_bytes(_saved({"w": torch.zeros(3)})[:100]),
        "a list": lambda path: torch.save([torch.zeros(3)], path),
        "not tensors": lambda path: torch.save({"conv1.weight": "text"}, path),
    }
    path = planted(torch_home, writers[content])
    with pytest.raises(ConfigError) as caught:
        build_model(ModelConfig("resnet18_imagenet", pretrained=True), in_channels=3, num_classes=10, image_size=32)
    message = str(caught.value)
    assert message.startswith(f"model.pretrained: {path} ") and "\n" not in message
    assert f"delete {path} so that it is downloaded again" in message
    assert not marker.exists()  # the crafted file's code did not run


def test_a_crafted_checkpoint_is_refused_as_data_too(tmp_path: Path):
    marker = tmp_path / "code-ran"
    crafted(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(checkpoint.CheckpointError, match="is not an augrun checkpoint: it holds Python objects"):
        checkpoint.load(tmp_path / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_the_precheck_refuses_a_crafted_cache_file_in_one_line_exit_2(workdir: Path, tmp_path: Path):
    marker = tmp_path / "code-ran"
    path = planted(tmp_path / "torch", lambda path: crafted(path, marker))
    result = run_augrun("train", *SMOKE, "model=resnet18_imagenet", "model.width=64", "model.pretrained=true", cwd=workdir,
                        env={"TORCH_HOME": str(tmp_path / "torch")})
    assert_user_error(result, f"model.pretrained: {path} is not torchvision's")
    assert not marker.exists() and not (workdir / "outputs").exists()


def _saved(state) -> bytes:
    import io
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


