import numpy as np
import pytest

from w2sclip import plots


@pytest.fixture
def figures(monkeypatch):
    """Keep every figure a plot function saves, to look inside it."""
    saved = []
    real = plots._save

    def keep(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def _is_png(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.format == "PNG" and im.width > 300 and im.height > 200


def test_confusion_counts_rows_and_top_pairs():
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0, 2]]
    cm = plots.confusion_counts(y, probs, 4)
    assert cm.tolist() == [[1, 2, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    rates = plots.row_normalise(cm)
    assert np.allclose(rates[0], [1 / 3, 2 / 3, 0, 0]) and not rates[3].any()  # absent class: zeros, no NaN
    assert plots.top_confused(cm, list("abcd"), k=5) == [("a", "b", pytest.approx(2 / 3)), ("b", "a", 0.5)]


def test_bars_never_draw_undefined_values_as_zero(tmp_path, figures):
    cells = {("cpl", "x"): [0.5, 0.7], ("cpl", "y"): [None, None], ("kd_lp", "x"): [0.2, None],
             ("kd_lp", "y"): [5.0, 5.0]}
    path = plots.plot_bars(cells, ["x", "y"], ["cpl", "kd_lp"], tmp_path / "b.png", title="t", ylabel="PGR",
                           scale=1.0, zero_line=True, clip=(-2.0, 2.0))
    assert _is_png(path)
    ax = figures[0].axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if np.isfinite(p.get_height()))
    assert heights == [0.2, 0.6, 5.0]  # no bar for the undefined cell
    texts = [t.get_text() for t in ax.texts]
    assert "n/a" in texts and "5.0" in texts  # undefined marked; the clipped value written out
    assert [p.get_hatch() for p in ax.patches if round(p.get_height(), 6) == 0.2] == ["///"]


def test_projection_labels_few_classes_all_many_classes_a_handful(tmp_path, figures):
    rng = np.random.default_rng(0)
    for n_classes, n_labels in ((6, {6}), (60, set(range(4, 9)))):
        angle = 2 * np.pi * np.arange(n_classes) / n_classes
        mu = np.zeros((n_classes, 16))
        mu[:, 0], mu[:, 1] = 5 * np.cos(angle), 5 * np.sin(angle)  # classes on a circle
        y = rng.integers(0, n_classes, 300)
        feats = mu[y] + 0.3 * rng.normal(size=(300, 16))
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)  # as the runs store them
        names = [f"c{i}" for i in range(n_classes)]
        path = plots.plot_projection(feats, y, mu + 1.0, {"cpl": mu, "cpl_poe": mu + 0.5}, names,
                                     tmp_path / f"p{n_classes}.png", title="t")
        assert _is_png(path)
        axes = figures[-1].axes
        assert len(axes) == 2 and all(len(ax.texts) in n_labels for ax in axes)
    # prototypes on one spot: one label, not a pile of overlapping ones
    path = plots.plot_projection(feats, y, mu, {"cpl": np.ones_like(mu) + 1e-3 * mu}, names, tmp_path / "q.png",
                                 title="t")
    assert len(figures[-1].axes[0].texts) == 1
    with pytest.raises(ValueError, match="unknown projection 'umap'; valid: pca, tsne"):
        plots.project_2d(feats, [], "umap")


def test_confusion_plot_names_ticks_only_for_small_class_counts(tmp_path, figures):
    rng = np.random.default_rng(0)
    for n, named in ((8, True), (60, False)):
        cm = rng.integers(0, 5, (n, n)) + 20 * np.eye(n, dtype=int)
        names = [f"name{i}" for i in range(n)]
        assert _is_png(plots.plot_confusion(cm, names, tmp_path / f"c{n}.png", title="t"))
        labels = [t.get_text() for t in figures[-1].axes[0].get_xticklabels()]
        assert ("name0" in labels) == named


def test_method_colours_are_fixed_and_distinct():
    from w2sclip.methods import METHODS

    names = ["weak", *METHODS]
    colors = plots.method_colors(names)
    assert len(set(colors.values())) == len(names)
    assert plots.method_colors(["cpl"])["cpl"] == colors["cpl"]  # the same in every figure
    ceilings = plots.method_colors([f"ceiling_{m}" for m in METHODS])
    assert set(ceilings.values()) <= set(plots.CEILING_GREYS)  # ceilings are greys, never a method's colour
    assert not set(ceilings.values()) & set(colors.values())
