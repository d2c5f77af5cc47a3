"""PNG figures of a tuning run: the calibration metric against gamma, the per-head probe effects, and Level 3's fitted gammas."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from .atomic_files import replacing
from .tuning.head_probing import DOWN, NEUTRAL, UP, HeadProbes
from .tuning.budgeted import BUDGETED
from .tuning.tuner import LevelResult, TuningResult


VERDICT_MARKS = {UP: "+", DOWN: "-", NEUTRAL: ""}


def plot_metric_vs_gamma(result: TuningResult, metric: str, path: str | Path) -> Path:
    """Calibration ``metric`` (a ScoredSplit summary key) for each gamma of the Level 1 and 2 grids;
    for the budgeted search, the objective of every candidate at every rung."""
    if BUDGETED in result.levels:
        return _plot_rungs(result, path)
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    axes.axhline(result.baseline_metrics.get(metric, result.baseline.summary().get(metric)), color="grey", linestyle="--", label="baseline (gamma = 1)")
    for level, style in ((1, "o-"), (2, "s-")):
        if level in result.levels and result.levels[level].candidates:
            candidates = result.levels[level].candidates
            heads = "all heads" if level == 1 else f"{result.levels[level].head_probes.dominant_kind()}-effective heads"
            axes.plot([c.gamma for c in candidates], [c.metrics[metric] for c in candidates], style, label=f"level {level} ({heads})")
    if 3 in result.levels:  # one gamma per head: a level line, not a point on the gamma axis
        axes.axhline(result.levels[3].calibration_metrics()[metric], color="tab:green", linestyle=":", label="level 3 (fitted per head)")
    if 0 in result.levels:
        level0 = result.levels[0]
        axes.plot([level0.gamma], [level0.calibration_metrics()[metric]], "k*", markersize=11, label="level 0 (fixed gamma)")
    gammas = sorted({1.0} | {c.gamma for level in result.levels.values() for c in level.candidates} | {level.gamma for level in result.levels.values() if level.level != 3})
    axes.set_xscale("log", base=2)
    axes.set_xticks(gammas, [f"{gamma:g}" for gamma in gammas])
    axes.minorticks_off()
    axes.set_xlabel("gamma (log scale)")
    axes.set_ylabel(f"calibration {metric.replace('_', ' ')}")
    gamma = f"a gamma per head (geometric mean {result.selected.gamma:.3g})" if result.selected.level == 3 and result.selected.heads is None else f"gamma {result.selected.gamma:g}"
    axes.set_title(f"selected: {result.selected.name}, {gamma}")
    axes.legend(fontsize="small")
    return _save(figure, path)


def _plot_rungs(result: TuningResult, path: str | Path) -> Path:
    search = result.levels[BUDGETED].search
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    markers = {"all": "o", "early": "^", "late": "v"}
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(search["rungs"])))
    gammas = {1.0}
    for rung, colour in zip(search["rungs"], colours):
        for group, marker in markers.items():
            points = [c for c in rung["candidates"] if c["name"].startswith(group)]
            if points:
                label = f"{rung['examples']} examples" if group == "all" else None
                axes.plot([c["gamma"] for c in points], [c["key"][0] for c in points], marker, color=colour, linestyle="none", label=label)
                gammas |= {c["gamma"] for c in points}
        axes.plot([1.0], [rung["baseline_key"][0]], "k_", markersize=14)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(gammas), [f"{gamma:g}" for gamma in sorted(gammas)])
    axes.minorticks_off()
    axes.set_xlabel("gamma (log scale); o all heads, ^ early half, v late half of the layers, - baseline")
    axes.set_ylabel("objective (first key component)")
    axes.set_title(f"budgeted search: selected {search['selection']['selected']}", fontsize="medium")
    axes.legend(fontsize="small", title="rung")
    return _save(figure, path)


def plot_head_effects(head_probes: HeadProbes, objective_label: str, path: str | Path) -> Path:
    """Heat-map of each probe's change of the objective's first component (red: better with the probe, blue:
    worse), marked + for up-effective and - for down-effective probes (ties of the first component are
    decided by the next one, so a pale cell can carry a mark)."""
    matrix = head_probes.effect_matrix()
    changes = np.abs(matrix[np.isfinite(matrix)])
    limit = float(changes.max()) if changes.size and changes.max() > 0 else 1.0  # a symmetric colour scale
    figure, axes = plt.subplots(figsize=(max(5.0, 0.35 * head_probes.num_heads + 2), max(2.2, 0.3 * matrix.shape[0] + 1.6)))
    image = axes.imshow(matrix, cmap="coolwarm", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    for effect in head_probes.effects:  # the colour shows the first key component; the mark shows the verdict
        axes.text(effect.head, 0 if effect.layer is None else effect.layer, VERDICT_MARKS[effect.kind], ha="center", va="center", fontsize=8)
    axes.set_xlabel("query head")
    axes.set_ylabel("layer" if head_probes.granularity == "layer_head" else "")
    if head_probes.granularity == "head":
        axes.set_yticks([0], ["all layers"])
    axes.set_title(f"{objective_label}: probe (gamma {head_probes.probe_gamma:g}) - baseline", fontsize="medium")
    figure.colorbar(image, ax=axes)
    return _save(figure, path)


def plot_fitted_gammas(level3: LevelResult, path: str | Path) -> Path:
    """Level 3: log2 of the fitted gamma per layer x head (red: more attention to the sink, blue: less; grey: a
    layer outside the tunable ones), beside the fit and held-out losses per step."""
    gammas = np.array(level3.profile.gammas, dtype=np.float64)
    matrix = np.log2(gammas)
    frozen = np.array([layer not in level3.fit["layers"] for layer in range(len(gammas))])
    matrix[frozen] = np.nan
    limit = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() and np.nanmax(np.abs(matrix)) > 0 else 1.0
    figure, (heat, curve) = plt.subplots(1, 2, figsize=(max(9.0, 0.35 * gammas.shape[1] + 7), max(3.2, 0.25 * gammas.shape[0] + 1.6)), width_ratios=(3, 2))
    colours = plt.get_cmap("coolwarm").with_extremes(bad="lightgrey")
    image = heat.imshow(matrix, cmap=colours, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    heat.set_xticks(range(gammas.shape[1]))
    heat.set_yticks(range(gammas.shape[0]))
    heat.tick_params(labelsize=7)
    heat.set_xlabel("query head")
    heat.set_ylabel("layer")
    heat.set_title("level 3: log2(fitted gamma)", fontsize="medium")
    figure.colorbar(image, ax=heat)
    fit = level3.fit
    curve.plot(range(len(fit["fit_losses"])), fit["fit_losses"], "o-", label="fit fold")
    curve.plot(range(len(fit["held_out_losses"])), fit["held_out_losses"], "s-", label="held-out fold")
    curve.axvline(fit["best_step"], color="grey", linestyle="--", label=f"kept: step {fit['best_step']}")
    curve.set_xlabel("step (0: gamma 1)")
    curve.set_ylabel(fit["loss"].replace("_", " "))
    curve.legend(fontsize="small")
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    try:
        with replacing(path) as temporary, open(temporary, "xb") as handle:
            figure.savefig(handle, dpi=120, format=path.suffix.lstrip(".") or "png")
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        plt.close(figure)
    return path
