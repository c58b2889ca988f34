"""The loss curve of a refinement, as an image: where it may go (checked
before any step) and drawing it (matplotlib, written atomically)."""

import os
from pathlib import Path
from typing import List, Union

from vocabxfer.checkpoints.atomic import check_writable_place, output_path, write_file
from vocabxfer.errors import VocabxferError

PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")


def check_plot_path(plot: Union[str, os.PathLike]) -> Path:
    """Where the loss curve will go, checked before any step: a file
    (not a folder) whose suffix names an image format matplotlib writes,
    in a place a file can be created."""
    path = output_path(plot)
    suffix = path.suffix.lower().lstrip(".")
    if path.is_dir():
        raise VocabxferError(f"refine: the plot path {path} is a folder; expected a file name "
                             "such as loss.png")
    if suffix not in PLOT_FORMATS:
        raise VocabxferError(f"refine: the plot path {path} has no image suffix matplotlib "
                             f"writes; expected one of .{', .'.join(PLOT_FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VocabxferError("refine: plotting the loss needs matplotlib (pip install "
                             "matplotlib)") from None
    check_writable_place(path, "refine: the plot path")
    return path


def plot_losses(losses: List[float], path: Path, axis_label: str) -> Path:
    """Draw the losses of every step, log scale, and write the image whole."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(range(1, len(losses) + 1), losses, color="#1f4e99", linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel(axis_label)
    axis.set_yscale("log")
    axis.set_title("vocabxfer refine: student against teacher", fontsize=10)
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    try:
        write_file(path, lambda staging: figure.savefig(staging, dpi=120,
                                                        format=path.suffix.lstrip(".").lower()))
    finally:
        plt.close(figure)
    return path
