"""Learning curves: loss and accuracy per epoch, on the training batches and the test
split, drawn with matplotlib (the ``plot`` extra) into a PNG."""

__all__ = ["learning_curves"]


def learning_curves(history, path, title=None):
    """Draw ``history`` (fit's per-epoch records) into ``path``: loss on the left,
    accuracy on the right, train and test.  Raises ValueError when matplotlib is
    missing or there is nothing to draw."""
    if not history:
        raise ValueError("the run has no completed epoch to draw")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("drawing needs matplotlib: pip install 'gpumlp[plot]'") from None
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((ax1, "loss", "loss"), (ax2, "accuracy", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label=f"train (during the epoch)")
        if all(f"test_{key}" in h for h in history):
            ax.plot(epochs, [h[f"test_{key}"] for h in history], "s-", ms=3, label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
