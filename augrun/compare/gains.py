"""Whether augmentation helps one model (or optimizer, or any other swept setting) more than another: for a sweep that
varies `aug` and one other key, each pipeline's gain over aug=none side by side across that key's values, and whether
the gains differ by more than noise. experiment=arch_ablation asks it of a ViT and a CNN: vision transformers are
known to need far heavier augmentation than CNNs on small datasets (DeiT)."""
from __future__ import annotations

import math

from augrun.compare.stats import BASELINE_KEY, BASELINE_VALUE, Report


def gains_lines(report: Report) -> list[str]:
    """Per pipeline, the gain in test accuracy and the change in the train-test gap against aug=none for each value of
    the other swept key, best gain first, and the verdict on the largest against the smallest; [] when the sweep
    does not vary exactly aug and one other key."""
    keys = {key for group in report.groups for key in group.key}
    others = sorted(keys - {BASELINE_KEY})
    if BASELINE_KEY not in keys or len(others) != 1:
        return []
    other = others[0]
    lines = []
    pipelines = sorted({g.key[BASELINE_KEY] for g in report.groups} - {BASELINE_VALUE})
    for pipeline in pipelines:
        rows = [g for g in report.groups if g.key.get(BASELINE_KEY) == pipeline and g.delta_vs_none is not None]
        if len(rows) < 2:
            continue
        rows.sort(key=lambda g: -g.delta_vs_none)
        parts = [f"{g.key.get(other)} {g.delta_vs_none:+.3f}"
                 + (f" (gap {g.gap_delta_vs_none:+.3f})" if g.gap_delta_vs_none is not None else "") for g in rows]
        most, least = rows[0], rows[-1]
        difference = most.delta_vs_none - least.delta_vs_none
        if most.delta_se is None or least.delta_se is None:
            verdict = "1 seed: no noise estimate"
        else:
            se = math.sqrt(most.delta_se ** 2 + least.delta_se ** 2)
            verdict = (f"{'beyond' if difference >= 2 * se else 'within'} noise: {difference:.3f} vs 2·SE = "
                       f"{2 * se:.3f}")
        lines.append(f"aug={pipeline} vs aug=none, test acc (train-test gap) by {other}: {', '.join(parts)}; "
                     f"helps {other}={most.key.get(other)} most ({verdict})")
    return lines
