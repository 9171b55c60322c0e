"""Progress output: a redrawn bar on a terminal, plain lines otherwise (logs, Ray workers)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Per-step bar on a TTY (at most ~5 redraws/s) and one summary line per epoch."""

    def __init__(self, label: str, epochs: int, stream: TextIO | None = None, enabled: bool = True):
        self.label, self.epochs = label, epochs
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def step(self, epoch: int, step: int, steps: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last < 0.2 and step != steps:
            return
        self._last = now
        width = 30
        filled = int(width * step / max(steps, 1))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} epoch {epoch}/{self.epochs} [{bar}] {step}/{steps}")
        self.stream.flush()

    def evaluating(self, what: str, done: int, total: int) -> None:
        """Progress of an evaluation pass: redrawn on a TTY; elsewhere one line when a pass starts
        (``done`` is the first chunk), so a log shows what a long pause is."""
        if not self.enabled:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._last < 0.2 and done != total:
                return
            self._last = now
            self.stream.write(f"\r\033[K{self.label} evaluating {what} {done}/{total}")
        elif done <= 1000 and total > 5000:
            self.stream.write(f"{self.label} evaluating {total} {what} images\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """One plain line (e.g. what the run trains on)."""
        if self.enabled:
            self.stream.write(f"{self.label}: {text}\n")
            self.stream.flush()

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        parts = [f"{self.label} epoch {row['epoch']}/{self.epochs}"]
        for key in ("test_acc", "test_loss", "val_acc", "train_loss", "upper_loss", "lower_loss", "lambda", "lc_acc"):
            if key in row:
                parts.append(f"{key} {row[key]:.4f}" if key.endswith("acc") else f"{key} {row[key]:.4g}")
        parts.append(f"lr {row['lr']:.3g}")
        parts.append(f"{row['epoch_time']:.1f}s" + (f" + {row['eval_time']:.1f}s eval" if "eval_time" in row else ""))
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(prefix + "  ".join(parts) + "\n")
        self.stream.flush()
