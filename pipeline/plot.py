"""The loss curve picture. matplotlib is an optional extra (`pip install -e ".[plot]"`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .tutorial_log import LOGS, TUTORIAL_SETTINGS


def matplotlib_missing() -> str | None:
    """None when matplotlib can be imported, else the one-line reason."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return 'matplotlib is not installed, so no loss.png (pip install -e ".[plot]")'
    except Exception as exc:  # matplotlib installed but broken (a bad MPLBACKEND, a config error)
        return f"matplotlib cannot be used ({exc.__class__.__name__}), so no loss.png"
    return None


def uses_tutorial_settings(arch: str, steps: int, lr: float, seed: int, tutorial_init: bool) -> bool:
    return arch in LOGS and tutorial_init and {"steps": steps, "lr": lr, "seed": seed} == TUTORIAL_SETTINGS


def write_loss_png(path: Path, arch: str, losses: Sequence[float], overlay_tutorial: bool) -> None:
    """Training loss per step on a log scale; the tutorial's logged points overlaid when comparable."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        ax.plot(range(len(losses)), losses, lw=1.2, label=f"{arch}: this run")
        if overlay_tutorial:
            steps, values = zip(*LOGS[arch])
            ax.scatter(steps, values, s=10, color="tab:red", zorder=3, label="tutorial's printed log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("BCE loss")
        ax.set_title(f"{arch}: training loss (final {losses[-1]:.3g})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
