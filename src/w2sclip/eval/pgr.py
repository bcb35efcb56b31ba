"""PGR of a table cell with a bootstrap interval (PROTOCOL.md section 5).

A cell (a method on a domain, or on the domain average) has one PGR, computed from the
seed-mean accuracies: ``(mean student - mean weak) / (mean ceiling - mean weak)``, never a mean
of per-seed ratios (small per-seed gaps make those explode). Its 95 % interval comes from a
two-level bootstrap: seeds are resampled with replacement (training randomness) and, jointly,
the D_test images (the finite test set; D_test is the same for every seed of a domain, so one
image resample applies to all seeds and all methods: paired). The cell is **undefined** when the
mean gap ``ceiling - weak`` is below two bootstrap standard errors of that gap: there is no gap
to recover that the noise could not explain. Nothing is dropped: an undefined cell says so.
With no per-image data (records only) the bootstrap resamples seeds only, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
BOOT_SEED = 0


@dataclass(frozen=True)
class PGRCell:
    """One PGR table cell."""

    value: float | None
    """PGR of the seed-mean accuracies (None when undefined)."""
    lo: float | None
    hi: float | None
    """95 % bootstrap interval (None when undefined or not computable)."""
    gap: float
    """Mean ceiling - mean weak accuracy."""
    gap_se: float | None
    """Bootstrap standard error of the gap (None with a single seed and no images)."""
    images: bool
    """Whether D_test images were resampled (per-image correctness was available)."""

    @property
    def defined(self) -> bool:
        return self.value is not None

    def text(self) -> str:
        if not self.defined:
            se = f", 2 SE {200 * self.gap_se:.1f}" if self.gap_se is not None else ""
            return f"undef. (gap {100 * self.gap:+.1f}{se})"
        if self.lo is None:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.lo:.2f}, {self.hi:.2f}]"


def _replicates(correct: np.ndarray, rng: np.random.Generator, seeds_draw: np.ndarray) -> np.ndarray:
    """Bootstrap accuracies (B, M) from per-image correctness (k seeds, n images, M methods)."""
    k, n, _ = correct.shape
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=seeds_draw.shape[0]).astype(np.float32)
    per_seed = np.einsum("bn,knm->kbm", counts, correct.astype(np.float32)) / n  # (k, B, M)
    b = np.arange(seeds_draw.shape[0])[:, None]
    return per_seed[seeds_draw, b].mean(1)  # (B, M)


def pgr_cells(domains: dict[str, np.ndarray] | None, accs: dict[str, np.ndarray], columns: tuple[int, int, int],
              n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict[str, PGRCell]:
    """PGR cells of one (student, weak, ceiling) triple per domain and for the domain average.

    ``accs[domain]``: (k seeds, M) accuracies; ``domains[domain]`` (optional): (k, n, M) per-image
    correctness on that domain's D_test (seeds in the same order, images aligned across seeds).
    ``columns`` are the indices of (student, weak, ceiling) among the M methods. The ``avg`` cell
    averages the accuracies over domains first (per seed and per bootstrap replicate)."""
    s, w, c = columns
    names = list(accs)
    k = min(a.shape[0] for a in accs.values())
    rng = np.random.default_rng(seed)
    seeds_draw = rng.integers(0, k, size=(n_boot, k))
    reps, means = {}, {}
    for d in names:
        means[d] = accs[d][:k].mean(0)
        if domains is not None and d in domains:
            reps[d] = _replicates(domains[d][:k], rng, seeds_draw)
        elif k > 1:
            reps[d] = accs[d][:k][seeds_draw].mean(1)
    if len(names) > 1:
        means["avg"] = np.mean([means[d] for d in names], axis=0)
        if all(d in reps for d in names):
            reps["avg"] = np.mean([reps[d] for d in names], axis=0)
    images = domains is not None
    out = {}
    for d, m in means.items():
        gap = float(m[c] - m[w])
        r = reps.get(d)
        gap_se = float(np.std(r[:, c] - r[:, w], ddof=1)) if r is not None else None
        if gap <= 0 or (gap_se is not None and gap < 2 * gap_se):
            out[d] = PGRCell(None, None, None, gap, gap_se, images)
            continue
        value = float((m[s] - m[w]) / gap)
        lo = hi = None
        if r is not None:
            g = r[:, c] - r[:, w]
            ok = g > 0
            ratios = (r[ok, s] - r[ok, w]) / g[ok]
            lo, hi = (float(q) for q in np.percentile(ratios, [2.5, 97.5]))
        out[d] = PGRCell(value, lo, hi, gap, gap_se, images)
    return out
