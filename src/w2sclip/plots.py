"""PNG figures of a report (see docs/report.md): bars per domain, strong models side by side,
a 2-D projection of image features with the prototypes, and a confusion matrix.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot): no display, no
global backend state, and nothing is imported until a function is called.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from w2sclip.eval.metrics import mean_std
from w2sclip.eval.pgr import PGRCell
from w2sclip.eval.tables import cell_values, group_title, method_order, pgr_cells

DPI = 110
PROJECTIONS = ("pca", "tsne")
PROJECTION_NAMES = {"pca": "PCA", "tsne": "t-SNE"}
FIXED_COLORS = {"weak": "#a0a0a0"}
CEILING_GREYS = ("#262626", "#4a4a4a", "#6b6b6b", "#8a8a8a", "#3a3a3a", "#5a5a5a")


def _figure(width: float, height: float, **kw):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kw)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def method_colors(methods: list[str]) -> dict[str, str]:
    """A fixed colour per method name (the same in every figure): greys for weak and ceilings."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from w2sclip.methods import METHODS

    tab10 = [to_hex(c) for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is grey
    palette = tab10 + [to_hex(c) for c in colormaps["tab20b"].colors[::2]] + [to_hex(c) for c in colormaps["Dark2"].colors]
    ceilings = sorted({f"ceiling_{m}" for m in METHODS} | {m for m in methods if m.startswith("ceiling")})
    ordered = [m for m in method_order(set(METHODS) | set(methods)) if m not in FIXED_COLORS and m not in ceilings]

    def color(m: str) -> str:
        if m in FIXED_COLORS:
            return FIXED_COLORS[m]
        if m in ceilings:
            return CEILING_GREYS[ceilings.index(m) % len(CEILING_GREYS)]
        return palette[ordered.index(m) % len(palette)]

    return {m: color(m) for m in methods}


def class_colors(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA colours, distinct for up to 20 classes, evenly spread hues beyond."""
    from matplotlib import colormaps

    if n <= 10:
        return np.asarray(colormaps["tab10"].colors)[:n]
    if n <= 20:
        return np.asarray(colormaps["tab20"].colors)[:n]
    return colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))


def plot_bars(cells: dict, groups: list[str], series: list[str], path: Path, *, title: str, ylabel: str,
              xlabel: str = "",
              scale: float = 100.0, colors: dict | None = None, zero_line: bool = False,
              clip: tuple[float, float] | None = None, note: str = "") -> Path:
    """Grouped bars: x = ``groups``, one bar per ``series``, height = mean and error bar = std of
    ``cells[(series, group)]`` (a list of per-seed values; None = undefined), or, for a
    :class:`~w2sclip.eval.pgr.PGRCell`, its value and its 95 % interval.

    A cell without any defined value is drawn as "n/a" (never as a zero bar); a cell with some
    undefined values is hatched. ``clip`` bounds the y-axis; values beyond it are written out.
    """
    colors = colors or method_colors(series)
    n_bars = max(1, len(series))
    width = 0.82 / n_bars
    fig = _figure(min(26.0, max(7.0, 0.13 * n_bars * len(groups) + 3.0)), 4.6)
    ax = fig.add_subplot()
    lo_hi = [0.0, 1.0 if clip else 0.0]
    for j, s in enumerate(series):
        x = np.arange(len(groups)) + (j - (n_bars - 1) / 2) * width
        for xi, g in zip(x, groups):
            vals = cells.get((s, g), [])
            if isinstance(vals, PGRCell):  # a point with an asymmetric interval
                if not vals.defined:
                    ax.text(xi, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="0.35")
                    continue
                mean = vals.value * scale
                err = None if vals.lo is None else [[mean - vals.lo * scale], [vals.hi * scale - mean]]
                k, vals = 2, [vals.value, vals.value]
                spread = (err[0][0], err[1][0]) if err else (0.0, 0.0)
            else:
                mean, std, k = mean_std(vals)
                if mean is None:
                    if vals:
                        ax.text(xi, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="0.35")
                    continue
                mean, std = mean * scale, std * scale
                err, spread = std, (std, std)
            inside = not clip or clip[0] <= mean <= clip[1]
            if inside:
                lo_hi = [min(lo_hi[0], mean - spread[0]), max(lo_hi[1], mean + spread[1])]
            ax.bar(xi, mean, width, yerr=err if k > 1 and inside else None, color=colors[s], capsize=1.5,
                   error_kw={"elinewidth": 0.7, "ecolor": "0.15"}, hatch="///" if k < len(vals) else None,
                   edgecolor="white" if k < len(vals) else None, linewidth=0)
            if not inside:  # the value is written out; an error bar that long would hide its neighbours
                y = min(max(mean, clip[0]), clip[1])
                ax.text(xi, y, f"{mean:.1f}", rotation=90, ha="center", va="top" if mean > 0 else "bottom",
                        fontsize=6, color="firebrick", zorder=5,
                        bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85})
    for s in series:  # legend entries, in series order
        ax.bar(np.nan, np.nan, color=colors[s], label=s)
    if clip:
        ax.set_ylim(max(clip[0], lo_hi[0] - 0.1), min(clip[1], lo_hi[1] + 0.1))
    if zero_line:
        ax.axhline(0, color="k", lw=0.8)
    long = sum(len(g) for g in groups) > 7 * len(groups) or len(groups) > 14
    ax.set_xticks(np.arange(len(groups)), groups, rotation=30 if long else 0, ha="right" if long else "center")
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    if note:
        fig.text(0.0, -0.01, note, fontsize=7, color="0.3", va="top")
    return _save(fig, path)


def project_2d(features: np.ndarray, others: list[np.ndarray], method: str = "pca",
               seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], tuple[str, str]]:
    """2-D coordinates of image ``features`` (N, D) and of each (C, D) array in ``others``.

    PCA is fitted on the image features only and applied to the rest; t-SNE embeds all points
    together (it has no out-of-sample transform).
    """
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; valid: {', '.join(PROJECTIONS)}")
    feats = np.asarray(features, dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(feats)
        var = pca.explained_variance_ratio_ * 100
        return (pca.transform(feats), [pca.transform(np.asarray(o, np.float32)) for o in others],
                (f"PC 1 ({var[0]:.0f} % of variance)", f"PC 2 ({var[1]:.0f} %)"))
    from sklearn.manifold import TSNE

    allx = np.concatenate([feats] + [np.asarray(o, np.float32) for o in others])
    z = TSNE(2, perplexity=min(30.0, (len(allx) - 1) / 3), init="pca", random_state=seed).fit_transform(allx)
    cuts = np.cumsum([len(feats)] + [len(o) for o in others])
    return z[: len(feats)], [z[a:b] for a, b in itertools.pairwise(cuts)], ("t-SNE 1", "t-SNE 2")


def _unit(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def plot_projection(features: np.ndarray, labels: np.ndarray, text_prototypes: np.ndarray,
                    learned: dict[str, np.ndarray], classnames: list[str], path: Path, *, title: str,
                    method: str = "pca", n_labels: int = 8) -> Path:
    """Image features (N, D) coloured by class, text-initialised prototypes (C, D) as circles and
    each learned prototype set (C, D) as stars with an arrow from its initialisation; one panel
    per learned set (or one panel with the text prototypes alone). Prototypes are L2-normalised
    (the heads score with normalised prototypes). The ``n_labels`` classes whose prototypes moved
    most are named (every class when there are at most 12), except where labels would overlap."""
    from matplotlib.lines import Line2D

    names = list(learned) or [None]
    z, zo, (xl, yl) = project_2d(features, [_unit(text_prototypes)] + [_unit(learned[m]) for m in learned], method)
    text2d, learned2d = zo[0], dict(zip(learned, zo[1:]))
    n_classes = len(text_prototypes)
    cols = class_colors(n_classes)
    k = 1.0 if n_classes <= 40 else 0.5  # smaller markers and fainter arrows when crowded
    ncols = min(2, len(names)) if len(names) == 4 else len(names)
    nrows = int(np.ceil(len(names) / ncols))
    fig = _figure(5.4 * ncols, 4.9 * nrows + 0.4)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.scatter(z[:, 0], z[:, 1], c=cols[np.asarray(labels)], s=5, alpha=0.3, linewidths=0, rasterized=True)
        ax.scatter(text2d[:, 0], text2d[:, 1], c=cols, marker="o", s=36 * k, edgecolors="k", linewidths=0.7 * k,
                   zorder=3)
        at = text2d
        if name is not None:
            at = learned2d[name]
            d = at - text2d
            ax.quiver(text2d[:, 0], text2d[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1,
                      width=0.003 * k, headwidth=5, headlength=6, headaxislength=5, color="0.1", alpha=0.7 * k,
                      zorder=4)
            ax.scatter(at[:, 0], at[:, 1], c=cols, marker="*", s=120 * k, edgecolors="k", linewidths=0.6 * k, zorder=5)
        for c in _labelled(at, text2d, n_labels, np.ptp(np.concatenate([z, text2d, at]), axis=0)):
            ax.annotate(classnames[c], at[c], xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=6,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})
        ax.set_title(f"{name} prototypes" if name else "text prototypes", fontsize=10)
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylabel(yl, fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [Line2D([], [], ls="", marker="o", ms=4, mfc="0.6", mec="none", label="image feature (D_test)"),
               Line2D([], [], ls="", marker="o", ms=7, mfc="white", mec="k", label="text-initialised prototype"),
               Line2D([], [], ls="", marker="*", ms=11, mfc="white", mec="k", label="learned prototype")]
    fig.legend(handles=handles[: 3 if learned else 2], loc="outside lower center", ncol=3, frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _labelled(at: np.ndarray, start: np.ndarray, k: int, span: np.ndarray) -> list[int]:
    """The ``k`` classes (every class up to 12) that moved most, skipping points that crowd a label
    (``span``: the (2,) extent of the axes)."""
    k = len(at) if len(at) <= 12 else k
    box = np.maximum(span, 1e-9) * np.array([0.12, 0.05])  # a label's size, roughly
    chosen: list[int] = []
    for c in np.argsort(-np.linalg.norm(at - start, axis=1)):
        if all((np.abs(at[c] - at[o]) > box).any() for o in chosen):
            chosen.append(int(c))
        if len(chosen) == k:
            break
    return chosen


def confusion_counts(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` counts: row = true class, column = predicted (argmax) class."""
    pred = np.asarray(probs).argmax(1)
    y = np.asarray(y_true, dtype=np.int64)
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Rows divided by their sums; rows of classes absent from D_test stay zero."""
    cm = np.asarray(cm, dtype=np.float64)
    return cm / np.maximum(cm.sum(1, keepdims=True), 1)


def top_confused(cm: np.ndarray, classnames: list[str], k: int = 5) -> list[tuple[str, str, float]]:
    """The ``k`` largest off-diagonal row-normalised rates as ``(true, predicted, rate)``."""
    rates = row_normalise(cm)
    np.fill_diagonal(rates, 0)
    flat = np.argsort(-rates, axis=None)[:k]
    pairs = [np.unravel_index(i, rates.shape) for i in flat]
    return [(classnames[t], classnames[p], float(rates[t, p])) for t, p in pairs if rates[t, p] > 0]


def plot_confusion(cm: np.ndarray, classnames: list[str], path: Path, *, title: str) -> Path:
    """Row-normalised confusion matrix; class names as ticks up to 40 classes, indices beyond."""
    rates = row_normalise(cm)
    n = len(rates)
    side = 10.0 if n > 40 else max(4.5, 0.24 * n + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    from matplotlib.colors import PowerNorm

    # a square-root colour scale, so that the small off-diagonal rates stay visible
    im = ax.imshow(rates, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class (square-root scale)")
    if n <= 40:
        size = 8 if n <= 15 else 7 if n <= 25 else 6
        ax.set_xticks(range(n), classnames, rotation=90, fontsize=size)
        ax.set_yticks(range(n), classnames, fontsize=size)
    if n <= 12:
        for (t, p), v in np.ndenumerate(rates):
            if v >= 0.01:
                ax.text(p, t, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "k")
    ax.set_xlabel("predicted class" + (" (index)" if n > 40 else ""))
    ax.set_ylabel("true class" + (" (index)" if n > 40 else ""))
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


# --- the figures of a report, from records and run folders ------------------------------------

PGR_NOTE = ("n/a: PGR undefined (ceiling - weak below two standard errors); red numbers: values beyond "
            "the axis. weak (0) and the ceilings (1) are left out.")


def image_markdown(alt: str, path: Path) -> list[str]:
    """The report lines that show the figure at ``path`` (saved under ``plots/``)."""
    return [f"![{alt}](plots/{path.name})", ""]


def _classnames(run, n: int) -> list[str]:
    names = run.folder.classnames()
    return names if len(names) == n else [str(i) for i in range(n)]


def group_figures(key: tuple, recs: list[dict], runs: list, plots_dir: Path, prefix: str, *,
                  domain: str | None = None, method: str | None = None, projection: str = "pca",
                  per_image: dict | None = None) -> tuple[list[str], list[str]]:
    """The figures of one (dataset, strong, weak, protocol) group: markdown lines and notes on
    the figures that were skipped (missing predictions.npz / projection.npz)."""
    name = group_title(key)
    lines, notes = ["### Figures", ""], []
    domains, methods, cells = cell_values(recs, "accuracy")
    p = plot_bars(cells, domains + ["avg"], methods, plots_dir / f"{prefix}_accuracy.png",
                  title=f"Accuracy on D_test (mean ± std over seeds)\n{name}", ylabel="accuracy (%)",
                  xlabel="domain")
    lines += image_markdown(f"accuracy per domain, {name}", p)
    _, students, cells = pgr_cells(recs, per_image)
    if students:
        p = plot_bars(cells, domains + ["avg"], students, plots_dir / f"{prefix}_pgr.png", scale=1.0,
                      title=f"PGR of the seed-mean accuracies, 95 % bootstrap interval\n{name}", ylabel="PGR", xlabel="domain", zero_line=True,
                      clip=(-2.0, 2.0), note=PGR_NOTE, colors=method_colors(methods))
        lines += image_markdown(f"PGR per domain, {name}", p)
    dom = domain if domain in domains else domains[0]
    mine = sorted((r for r in runs if r.complete and r.group == key and r.domain == dom), key=lambda r: r.seed)
    lines += _projection(mine, name, dom, plots_dir / f"{prefix}_projection.png", projection, notes)
    lines += _confusion(mine, name, dom, plots_dir / f"{prefix}_confusion.png", method, notes)
    return lines, notes


def _projection(runs: list, name: str, dom: str, path: Path, projection: str, notes: list) -> list[str]:
    found = next(((r, a) for r in runs if (a := r.folder.npz("projection.npz")) is not None), None)
    if found is None:
        notes.append(f"{name}: no projection.npz in the runs of domain {dom}; projection plot skipped")
        return []
    run, arrays = found
    learned_names = method_order(set(arrays) - {"features", "labels", "text_prototypes"})
    learned = {m: arrays[m] for m in learned_names[:4]}
    classes = _classnames(run, len(arrays["text_prototypes"]))
    plot_projection(arrays["features"], arrays["labels"], arrays["text_prototypes"], learned, classes, path,
                    method=projection, title=f"{PROJECTION_NAMES[projection]} of D_test image features, {dom}, "
                                             f"seed {run.seed}\n{name}")
    shown = ", ".join(learned) or "none learned in this run"
    extra = f" ({', '.join(learned_names[4:])} not drawn)" if len(learned_names) > 4 else ""
    return image_markdown(f"projection, {name}", path) + [
        f"Projection: {len(arrays['features'])} image features of {dom} (seed {run.seed}); circles: "
        f"text-initialised prototypes, stars: learned prototypes ({shown}){extra}. "
        + ("PCA is fitted on the image features; text prototypes may sit apart from them (the modality gap)."
           if projection == "pca" else "t-SNE of features and prototypes together."), ""]


def _confusion(runs: list, name: str, dom: str, path: Path, method: str | None, notes: list) -> list[str]:
    preds = [(r, p) for r in runs if (p := r.folder.npz("predictions.npz")) is not None]
    if not preds:
        notes.append(f"{name}: no predictions.npz in the runs of domain {dom}; confusion matrix skipped")
        return []
    available = method_order(k for _, p in preds for k, v in p.items() if k != "y_true" and np.ndim(v) == 2)
    students = [m for m in available if m != "weak" and not m.startswith("ceiling")]
    chosen = method or ("cpl" if "cpl" in available else (students or available or [None])[0])
    used = [(r, p) for r, p in preds if chosen in p]
    if not used:
        notes.append(f"{name}: method {chosen!r} has no predictions on domain {dom} (available: "
                     f"{', '.join(available) or 'none'}); confusion matrix skipped")
        return []
    n = used[0][1][chosen].shape[1]
    cm = sum(confusion_counts(p["y_true"], p[chosen], n) for _, p in used)
    classes = _classnames(used[0][0], n)
    seeds = [r.seed for r, _ in used]
    plot_confusion(cm, classes, path, title=f"Confusion of {chosen} on {dom} (rows normalised; "
                                            f"summed over seeds {seeds})\n{name}")
    pairs = "; ".join(f"{t} → {p} {100 * v:.0f} %" for t, p, v in top_confused(cm, classes))
    return image_markdown(f"confusion matrix, {name}", path) + [
        f"Most confused on {dom} with {chosen} (true → predicted, share of the true class): {pairs or 'none'}.", ""]


def strong_figures(groups: dict[tuple, list[dict]], plots_dir: Path) -> list[str]:
    """Per (dataset, weak, protocol): each method's domain-averaged accuracy for every strong model."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    by = {}
    for (dataset, strong, weak, protocol), recs in groups.items():
        by.setdefault((dataset, weak, protocol), {})[strong] = recs
    lines = []
    for i, ((dataset, weak, protocol), per_strong) in enumerate(by.items()):
        cells, methods, doms = {}, set(), {}
        for strong, recs in per_strong.items():
            d, ms, c = cell_values(recs, "accuracy")
            doms[strong] = d
            methods |= set(ms)
            cells.update({(strong, m): c[(m, "avg")] for m in ms})
        strongs = list(per_strong)
        colors = {s: to_hex(colormaps["tab10"].colors[j % 10]) for j, s in enumerate(strongs)}
        title = f"Accuracy averaged over domains, by strong model\ndataset = {dataset}, weak = {weak}, protocol = {protocol}"
        p = plot_bars(cells, method_order(methods), strongs, plots_dir / f"strong_{i:02d}.png", title=title,
                      ylabel="accuracy (%)", xlabel="method", colors=colors)
        same = len({tuple(d) for d in doms.values()}) == 1
        lines += [f"## Strong models side by side: dataset = {dataset}, weak = {weak}, protocol = {protocol}", "",
                  *image_markdown(f"strong models, {dataset} {weak} {protocol}", p),
                  "Bars: mean over seeds of the domain-averaged accuracy; error bars: std over seeds. "
                  + ("Every strong model covers the same domains." if same else
                     "Domains differ between strong models: " + "; ".join(f"{s}: {', '.join(d)}" for s, d in doms.items())),
                  ""]
    return lines


def ladder_figure(ladder, path: Path) -> Path:
    """The pretraining ladder: rows = gain over zero-shot, gain over KD+LP (points) and PGR;
    columns = domains and their average; x = pretraining samples seen (log axis); one line per
    method (``eval.ladder``). Rungs with 0 samples seen (random weights) are left off the log axis."""
    rungs = [r for r in ladder.rungs if r.samples > 0]
    cols = ladder.domains + ["avg"]
    rows = [("zero_shot", "gain over zero-shot (points)"), ("kd_lp", "gain over KD+LP (points)"), ("pgr", "PGR")]
    colors = method_colors(ladder.methods)
    fig = _figure(min(26.0, 2.6 * len(cols) + 1.5), 7.2)
    axes = fig.subplots(len(rows), len(cols), sharex=True, squeeze=False)
    x = [r.samples for r in rungs]
    for i, (what, label) in enumerate(rows):
        for j, d in enumerate(cols):
            ax = axes[i][j]
            for m in ladder.methods:
                if what == "pgr":
                    y = [r.pgr.get((m, d)) for r in rungs]
                else:
                    y = [None if (v := r.gain.get((what, m, d))) is None else 100 * v for r in rungs]
                pts = [(a, b) for a, b in zip(x, y) if b is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, color=colors[m], label=m)
            ax.axhline(0, color="0.6", lw=0.6)
            ax.set_xscale("log")
            if i == 0:
                ax.set_title(d, fontsize=9)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("pretraining samples seen", fontsize=8)
            ax.tick_params(labelsize=7)
    legend = {}
    for ax in axes.flat:  # every method once, also those absent from some panels
        legend.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in legend})
    labels = [m for m in ladder.methods if m in legend]
    handles = [legend[m] for m in labels]
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(f"Pretraining ladder: dataset = {ladder.dataset}, weak = {ladder.weak}"
                 + (f", protocol = {ladder.protocol}" if ladder.protocol else ""), fontsize=10)
    return _save(fig, path)
