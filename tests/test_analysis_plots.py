"""Plots of a synthetic study: files are non-empty PNGs (and PDFs), axes are labelled, drawn data
are the known numbers, and partial data or wrong requests give clear errors, never crashes."""
from __future__ import annotations

import numpy as np
import pytest

import analysis
from analysis.plots import label_correction_matrix
from ebomlc.errors import EbomlcError

from .test_analysis_support import LC_MATRIX, epoch_lines, params, write_study, write_sweep_study, write_trial

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > min_bytes, path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    s = write_study(tmp_path_factory.mktemp("plots"))
    write_trial(s, "train_running", params("ebomlc", "flip", 0.4, 1), epoch_lines("ebomlc", 0.6, reported=2))
    return s


@pytest.fixture(scope="module")
def df(study):
    return analysis.load_study(study)


@pytest.fixture(scope="module")
def final(df):
    return analysis.final_results(df)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return analysis.final_results(analysis.load_study(write_sweep_study(tmp_path_factory.mktemp("sweep"))))


RHOS, KS = (0.2, 0.5, 1.0), (1, 3)  # write_sweep_study's grid (rho None = the preset 0.2)
SWEEP_SETTINGS = ("uniform-40%", "flip-20%")


def known(rho, k, seed):
    """write_sweep_study's final accuracy (%) of one trial."""
    return (0.7 + 0.1 * rho - 0.01 * k + 0.001 * seed) * 100


def error_bars(ax):
    """``(label, x, y, half height of each error bar)`` of each errorbar series of ``ax``, in drawing order."""
    series = []
    for container in ax.containers:
        line, _caps, (bars, *_) = container.lines
        x, y = line.get_data()
        halves = [(segment[1][1] - segment[0][1]) / 2 for segment in bars.get_segments()]
        series.append((container.get_label(), np.asarray(x, float), np.asarray(y, float), np.asarray(halves)))
    return series


def caption(fig):
    return "\n".join(t.get_text() for t in fig.texts)


def assert_legends_off_the_data(fig):
    """Every legend of ``fig`` (figure or axes legend) lies outside every axes' data area."""
    fig.draw_without_rendering()  # runs the layout engine
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), (box, ax.get_window_extent())
    return legends


def test_ablation(sweep, tmp_path):
    fig = analysis.plot_ablation(sweep, "rho", tmp_path / "ablation_rho.png", also=(".pdf",))
    assert_png(tmp_path / "ablation_rho.png")
    assert (tmp_path / "ablation_rho.pdf").read_bytes()[:5] == b"%PDF-"
    (ax,) = fig.axes
    assert ax.get_xlabel() == "rho" and ax.get_ylabel() == "final test accuracy (%)"
    assert ax.get_title() == "EBOMLC on digits"


def test_ablation_one_line_per_setting_and_other_value(sweep, tmp_path):
    fig = analysis.plot_ablation(sweep, "rho", tmp_path / "ablation_rho.png")
    (ax,) = fig.axes
    series = error_bars(ax)
    labels = [f"{s}, K={k}" for s in SWEEP_SETTINGS for k in KS]
    assert [label for label, *_ in series] == labels  # settings x K values, nothing pooled over K
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    for (label, x, y, bars), (setting, k) in zip(series, [(s, k) for s in SWEEP_SETTINGS for k in KS]):
        np.testing.assert_allclose(x, RHOS)
        np.testing.assert_allclose(y, [np.mean([known(r, k, seed) for seed in (1, 2)]) for r in RHOS])
        np.testing.assert_allclose(bars, [np.std([known(r, k, seed) for seed in (1, 2)], ddof=1) for r in RHOS])
    pooled = np.std([known(0.2, k, seed) for k in KS for seed in (1, 2)], ddof=1)  # the spread over K and seeds
    assert pooled > 10 * series[0][3][0]


def test_ablation_by_display_name(sweep, tmp_path):
    fig = analysis.plot_ablation(sweep, "K", tmp_path / "ablation_K.png")  # by display name
    assert_png(tmp_path / "ablation_K.png")
    assert fig.axes[0].get_xlabel() == "K"
    series = error_bars(fig.axes[0])
    assert [label for label, *_ in series] == [f"{s}, rho={r:g}" for s in SWEEP_SETTINGS for r in RHOS]
    for label, x, y, bars in series:
        rho = float(label.split("rho=")[1])
        np.testing.assert_allclose(x, KS)
        np.testing.assert_allclose(y, [np.mean([known(rho, k, seed) for seed in (1, 2)]) for k in KS])
        np.testing.assert_allclose(bars, np.std([known(rho, 1, 1), known(rho, 1, 2)], ddof=1))


def test_ablation_caption_and_legend(sweep, tmp_path):
    fig = analysis.plot_ablation(sweep, "rho", tmp_path / "ablation_rho.png")
    text = caption(fig)
    assert "error bars: std over seeds (n = 2 finished trials per point)" in text
    assert "other swept hyperparameters (K)" in text and "held fixed" in text
    (legend,) = assert_legends_off_the_data(fig)
    assert legend.get_title().get_text() == "noise, K"


def test_ablation_seed_counts_in_caption(tmp_path):
    study = write_sweep_study(tmp_path, rhos=(None, 1.0), ks=(1,), settings=[("unif", 0.4)])
    write_trial(study, "train_third_seed", params("ebomlc", "unif", 0.4, 3, rho=1.0, inner_steps=1),
                epoch_lines("ebomlc", 0.9))
    fig = analysis.plot_ablation(analysis.final_results(analysis.load_study(study)), "rho", tmp_path / "a.png")
    assert "std over seeds (n = 2\u20133 finished trials per point)" in caption(fig)
    ((label, x, y, bars),) = error_bars(fig.axes[0])
    assert label == "uniform-40%"  # K is not swept here: one line per setting
    np.testing.assert_allclose(y, [np.mean([known(0.2, 1, 1), known(0.2, 1, 2)]),
                                   np.mean([known(1.0, 1, 1), known(1.0, 1, 2), 90.0])])
    np.testing.assert_allclose(bars[1], np.std([known(1.0, 1, 1), known(1.0, 1, 2), 90.0], ddof=1))


def test_ablation_of_unswept_param_is_an_error(final, tmp_path):
    with pytest.raises(EbomlcError, match="rho is not swept in this study"):
        analysis.plot_ablation(final, "rho", tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_curves(df, tmp_path):
    fig = analysis.plot_curves(df, "uniform-40%", tmp_path / "curves_uniform-40.png")
    assert_png(tmp_path / "curves_uniform-40.png")
    acc, upper, lower = fig.axes
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 3
    assert (acc.get_ylabel(), upper.get_ylabel(), lower.get_ylabel()) == ("test accuracy (%)", "upper loss",
                                                                          "lower loss")
    assert [line.get_label() for line in acc.lines] == ["CE", "MLC", "EBOMLC"]
    assert [line.get_label() for line in upper.lines] == ["MLC", "EBOMLC"]  # CE has no upper level
    assert [line.get_label() for line in lower.lines] == ["CE", "MLC", "EBOMLC"]  # CE: its training loss
    np.testing.assert_allclose(acc.lines[0].get_ydata(), [62.0, 67.0, 72.0])  # CE: mean of 0.70 and 0.74 - 0.05/epoch
    assert acc.lines[2].get_color() == upper.lines[1].get_color()  # one colour per method
    (legend,) = assert_legends_off_the_data(fig)
    assert [t.get_text() for t in legend.get_texts()] == ["CE", "MLC", "EBOMLC"]


def test_curves_legend_of_many_cases_is_off_the_data(tmp_path):
    rhos, ks = (None, 0.3, 0.5, 0.7, 0.9, 1.0), (1, 2, 3, 4)
    study = write_sweep_study(tmp_path, rhos=rhos, ks=ks, settings=[("unif", 0.4)])
    fig = analysis.plot_curves(analysis.load_study(study), "uniform-40%", tmp_path / "c.png")
    assert_png(tmp_path / "c.png")
    assert len(fig.axes[0].lines) == len(rhos) * len(ks) == 24
    (legend,) = assert_legends_off_the_data(fig)
    assert len(legend.get_texts()) == 24


def test_curves_of_a_running_trial(df, tmp_path):
    fig = analysis.plot_curves(df, "flip-40%", tmp_path / "c.png")
    assert_png(tmp_path / "c.png")
    assert [line.get_label() for line in fig.axes[0].lines] == ["EBOMLC"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [1, 2])
    with pytest.raises(EbomlcError, match="no trials at setting 'flip-80%'"):
        analysis.plot_curves(df, "flip-80%", tmp_path / "d.png")


def test_label_correction(final, tmp_path):
    counts, n = label_correction_matrix(final, "ebomlc", "uniform-40%")
    np.testing.assert_array_equal(counts, 2 * np.array(LC_MATRIX))
    assert n == 2
    fig = analysis.plot_label_correction(final, "ebomlc", "uniform-40%", tmp_path / "lc.png")
    assert_png(tmp_path / "lc.png")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("corrected label", "true label")
    assert "EBOMLC, uniform-40%" in ax.get_title() and "83.3%" in ax.get_title()
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image.sum(axis=1), 1.0)  # rows normalised
    np.testing.assert_allclose(np.diag(image), [0.8, 0.9, 0.8])


def test_label_correction_needs_a_matrix(final, tmp_path):
    with pytest.raises(EbomlcError, match="no label-correction matrix for ce"):
        analysis.plot_label_correction(final, "ce", "uniform-40%", tmp_path / "x.png")
    with pytest.raises(EbomlcError, match="no label-correction matrix"):  # running: no final epoch yet
        analysis.plot_label_correction(final, "ebomlc", "flip-40%", tmp_path / "x.png")


def test_time(final, tmp_path):
    fig = analysis.plot_time(final, tmp_path / "time.png")
    assert_png(tmp_path / "time.png")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("method", "seconds per epoch")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CE", "MLC", "EBOMLC"]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [1.0, 2.0, 1.5])
