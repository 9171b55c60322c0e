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


def test_ablation(sweep, tmp_path):
    fig = analysis.plot_ablation(sweep, "rho", tmp_path / "ablation_rho.png", also=(".pdf",))
    assert_png(tmp_path / "ablation_rho.png")
    assert (tmp_path / "ablation_rho.pdf").read_bytes()[:5] == b"%PDF-"
    (ax,) = fig.axes
    assert ax.get_xlabel() == "rho" and ax.get_ylabel() == "final test accuracy (%)"
    assert "averaged over K" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["uniform-40%", "flip-20%"]
    # one line per setting: x = rho values, y = mean over seeds and K (0.7 + 0.1 rho - 0.02 + 0.0015)
    x, y = ax.lines[0].get_data()
    np.testing.assert_allclose(x, [0.2, 0.5, 1.0])
    np.testing.assert_allclose(y, [(0.7 + 0.1 * r - 0.02 + 0.0015) * 100 for r in (0.2, 0.5, 1.0)])


def test_ablation_by_display_name(sweep, tmp_path):
    fig = analysis.plot_ablation(sweep, "K", tmp_path / "ablation_K.png")
    assert_png(tmp_path / "ablation_K.png")
    assert fig.axes[0].get_xlabel() == "K"
    np.testing.assert_allclose(fig.axes[0].lines[0].get_data()[0], [1, 3])


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
