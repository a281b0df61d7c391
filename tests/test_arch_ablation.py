"""experiment=arch_ablation: does augmentation help a ViT more than a CNN? The real experiment config, swept on the CPU
with its models shrunk, and the comparison's gain of each pipeline by model."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from augrun.cli import main
from augrun.compare.gains import gains_lines
from augrun.compare.stats import Group, Report, Stat
from augrun.config.command_line import parse_command_line
from augrun.config.compose import expand_jobs

pytest.importorskip("timm", reason="timm is not installed (pip install 'augrun[timm]')")

# vit_tiny_cifar as a CPU can train it in a second: the same timm class and 4x4 patches, one narrow block
VIT_MICRO = """source: timm
name: vit_tiny_patch16_224
drop_path_rate: 0.1
options: {patch_size: 4, depth: 1, embed_dim: 32, num_heads: 2}
"""


def test_the_experiment_sweeps_two_models_three_pipelines_three_seeds():
    jobs = expand_jobs(parse_command_line(["-m", "experiment=arch_ablation"]))
    combos = {tuple(sorted(o for o in job if o.split("=")[0] in ("model", "aug"))) for job in jobs}
    assert len(jobs) == 18 and len(combos) == 6
    assert ("aug=deit", "model=vit_tiny_cifar") in combos and ("aug=none", "model=resnet18") in combos


@pytest.mark.slow
def test_the_comparison_gives_each_pipelines_gain_by_model(in_workdir: Path):
    extra = in_workdir / "conf"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "vit_micro_cifar.yaml").write_text(VIT_MICRO)
    main(["train", "-m", f"--config-dir={extra}", "experiment=arch_ablation", "model=resnet18,vit_micro_cifar",
          "aug=none,deit", "seed=0", "model.width=4", "dataset=synthetic", "dataset.train_size=64",
          "dataset.test_size=64", "trainer.epochs=1", "trainer.batch_size=32", "trainer.workers=0",
          "hydra.sweep.dir=sweep"])
    report = (in_workdir / "sweep" / "comparison.md").read_text()
    (line,) = [x for x in report.split("## Gain by setting")[1].splitlines() if x.startswith("- ")]
    assert line.startswith("- aug=deit vs aug=none, test acc (train-test gap) by model: ")
    assert "resnet18 " in line and "vit_micro_cifar " in line and "helps model=" in line
    with open(in_workdir / "sweep" / "comparison.csv") as file:
        rows = {row["group"]: row for row in csv.DictReader(file)}
    for model in ("resnet18", "vit_micro_cifar"):  # each model against its own aug=none
        deit, none = rows[f"aug=deit model={model}"], rows[f"aug=none model={model}"]
        assert float(deit["delta_vs_none"]) == pytest.approx(
            float(deit["test_acc_mean"]) - float(none["test_acc_mean"]), abs=1e-5)


def group(model: str, aug: str, delta: float | None, se: float | None, gap: float | None = None) -> Group:
    g = Group(f"aug={aug} model={model}", {"aug": aug, "model": model}, [], {"test_acc": Stat(None, None)})
    g.delta_vs_none, g.delta_se, g.gap_delta_vs_none = delta, se, gap
    return g


def test_the_verdict_says_which_model_gains_most_and_whether_beyond_noise():
    report = Report([group("resnet18", "deit", 0.02, 0.01, -0.05), group("vit", "deit", 0.15, 0.02, -0.20),
                     group("resnet18", "none", None, None), group("vit", "none", None, None)], [])
    (line,) = gains_lines(report)
    assert line == ("aug=deit vs aug=none, test acc (train-test gap) by model: vit +0.150 (gap -0.200), resnet18 "
                    "+0.020 (gap -0.050); helps model=vit most (beyond noise: 0.130 vs 2·SE = 0.045)")
    report.groups[1].delta_vs_none = 0.05
    assert "within noise: 0.030 vs 2·SE = 0.045" in gains_lines(report)[0]


def test_no_gain_section_without_exactly_one_other_swept_key():
    gains = [group("resnet18", "deit", 0.02, 0.01), group("vit", "deit", 0.15, 0.02)]
    assert len(gains_lines(Report(gains, []))) == 1
    for g, optim in zip(gains, ("adam", "sgd")):  # a second swept key: gains by which of the two is ambiguous
        g.key["optim"] = optim
    assert gains_lines(Report(gains, [])) == []
