"""Learning curves: loss and accuracy per epoch, on the training batches and the test
split, drawn with matplotlib (the ``plot`` extra) into a PNG."""
from typing import Any

__all__ = ["learning_curves", "curves_figure", "MARKERS_UP_TO"]

MARKERS_UP_TO = 40          # epochs: with more, the points are not marked (the line says enough)


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("drawing needs matplotlib: pip install -e '.[plot]' (in the gpumlp checkout)") from None
    return plt


def curves_figure(history: list[dict], title: str | None = None) -> Any:
    """The matplotlib Figure of :func:`learning_curves` (1200 × 500 pixels at 100 dpi): loss on
    a log axis with labelled minor ticks, accuracy beside it, train and test."""
    if not history:
        raise ValueError("the run has no completed epoch to draw")
    plt = _pyplot()
    from matplotlib import ticker
    epochs = [h["epoch"] for h in history]
    marked = len(epochs) <= MARKERS_UP_TO
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    for ax, key, label in ((ax1, "loss", "loss"), (ax2, "accuracy", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], "o-" if marked else "-", ms=4, lw=1.5,
                label="train (during the epoch)")
        if all(h.get(f"test_{key}") is not None for h in history):
            ax.plot(epochs, [h[f"test_{key}"] for h in history], "s-" if marked else "-", ms=4, lw=1.5,
                    label="test")
        ax.set_xlabel("epoch", fontsize=12)
        ax.set_ylabel(label, fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(True, which="major", alpha=0.35)
        ax.legend(fontsize=11)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax1.set_yscale("log")
    ax1.grid(True, which="minor", alpha=0.15)
    # a loss that spans less than two decades has one or two major ticks: label the minor ones too
    ax1.yaxis.set_minor_formatter(ticker.LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.6)))
    ax1.tick_params(axis="y", which="minor", labelsize=9)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def learning_curves(history: list[dict], path: Any, title: str | None = None) -> None:
    """Draw ``history`` (fit's per-epoch records) into ``path``: loss on the left,
    accuracy on the right, train and test.  Raises ValueError when matplotlib is
    missing or there is nothing to draw."""
    fig = curves_figure(history, title)
    import matplotlib.pyplot as plt
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)
