"""The loss curve picture. matplotlib is an optional extra (`pip install -e ".[plot]"`).

`LossPlot.start` draws loss.png in a separate Python process (this file run as a script), so that
importing matplotlib and rendering (1.5-2.5 s on a 2-core machine) run beside the export and the
checks instead of before them. The child only renders: it reads the curve on stdin and writes the
PNG's bytes on stdout; every file is written by the parent (staged and committed with the
candidate's manifest, so a killed run never leaves a half-written picture anywhere that counts).
A plotting failure is a notice, never an error.

Importing this module is cheap (no matplotlib, no torch), and it imports nothing from `pipeline` at
module level, so that it can run as a script.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

CHILD_TIMEOUT_S = 120.0  # a child that has not answered by then (a stuck font cache...) is killed: a notice
# The child yields the CPU to the export and checks it runs beside (the run's critical path) when the
# machine's cores are busy; on an idle machine it has a core of its own anyway.
CHILD_NICENESS = 10


def matplotlib_missing() -> str | None:
    """None when matplotlib can be imported, else the one-line reason."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return 'matplotlib is not installed, so no loss.png (pip install -e ".[plot]")'
    except Exception as exc:  # matplotlib installed but broken (a bad MPLBACKEND, a config error)
        return f"matplotlib cannot be used ({exc.__class__.__name__}), so no loss.png"
    return None


def uses_tutorial_settings(name: str, steps: int, lr: float, seed: int, tutorial_init: bool) -> bool:
    from ..spec.archs import TUTORIAL
    from ..spec.tutorial_log import LOGS

    return name in LOGS and tutorial_init and (steps, lr, seed) == (TUTORIAL.steps, TUTORIAL.lr, TUTORIAL.seed)


def tutorial_points(name: str) -> tuple[tuple[int, float], ...]:
    """The tutorial's printed (step, loss) log for a built-in."""
    from ..spec.tutorial_log import LOGS

    return LOGS[name]


def render_loss_png(name: str, losses: Sequence[float], overlay: Sequence[Sequence[float]] = ()) -> bytes:
    """Training loss per step on a log scale, as PNG bytes; `overlay` (step, loss) points (the
    tutorial's printed log) are drawn over it when given."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure on an Agg canvas, without pyplot: no screen, no global figure registry, less to import.
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(range(len(losses)), losses, lw=1.2, label=f"{name}: this run")
    if overlay:
        steps, values = zip(*overlay)
        ax.scatter(steps, values, s=10, color="tab:red", zorder=3, label="tutorial's printed log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("BCE loss")
    ax.set_title(f"{name}: training loss (final {losses[-1]:.3g})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


class PlotFailed(Exception):
    """loss.png could not be drawn; the message is the user's notice (one line)."""


class LossPlot:
    """loss.png being drawn by a child process. `result()` waits for it and returns the PNG's bytes
    (PlotFailed: the notice to show instead); `cancel()` stops it. Use one of the two, once; `cancel`
    after `result` does nothing."""

    def __init__(self, name: str, losses: Sequence[float], overlay: Sequence[Sequence[float]] = ()) -> None:
        import json
        import subprocess
        import threading

        payload = json.dumps({"name": name, "losses": list(losses), "overlay": [list(p) for p in overlay]}).encode()
        # -P: the script's folder (pipeline/training/) is not put on sys.path, so its modules cannot shadow others
        self._proc = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).resolve()), "--render"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out: list[tuple[bytes, bytes]] = []
        # The curve (up to megabytes) goes in and the PNG comes out on a thread, so neither side
        # waits on a full pipe while the caller goes on.
        self._io = threading.Thread(target=self._communicate, args=(payload,), daemon=True)
        self._io.start()

    def _communicate(self, payload: bytes) -> None:
        try:
            self._out.append(self._proc.communicate(payload))
        except (OSError, ValueError):  # the child died early (broken pipe) or was cancelled
            pass

    def result(self, timeout: float = CHILD_TIMEOUT_S) -> bytes:
        self._io.join(timeout)
        if self._io.is_alive():
            self.cancel()
            raise PlotFailed(f"loss.png not written: drawing it took over {timeout:g} s; the model is saved")
        code = self._proc.wait()
        out, err = self._out[0] if self._out else (b"", b"")
        if code == 0 and out.startswith(b"\x89PNG\r\n\x1a\n"):
            return out
        lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        why = lines[-1][:200] if lines else f"exit status {code}"
        raise PlotFailed(f"loss.png not written: matplotlib failed ({why}); the model is saved")

    def cancel(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._io.join()
        self._proc.wait()


def start_loss_plot(name: str, losses: Sequence[float], overlay_tutorial: bool) -> tuple[LossPlot | None, str | None]:
    """(the drawing under way, None), or (None, why there will be no loss.png)."""
    missing = matplotlib_missing()
    if missing:
        return None, missing
    try:
        return LossPlot(name, losses, tutorial_points(name) if overlay_tutorial else ()), None
    except OSError as exc:  # no process could be started (out of memory, process limit)
        return None, f"loss.png not written: no process to draw it ({exc.strerror or exc.__class__.__name__})"


def _child() -> int:
    """`python -P plot.py --render`: the curve as JSON on stdin, the PNG on stdout; on a failure one
    line on stderr and exit status 3."""
    import json
    import os

    os.nice(CHILD_NICENESS)
    try:
        spec = json.loads(sys.stdin.buffer.read())
        png = render_loss_png(spec["name"], spec["losses"], spec["overlay"])
    except Exception as exc:  # any plotting failure: the parent turns this line into a notice
        first = (str(exc).splitlines() or [""])[0][:200]
        print(f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__, file=sys.stderr)
        return 3
    sys.stdout.buffer.write(png)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--render"]:
    sys.exit(_child())
