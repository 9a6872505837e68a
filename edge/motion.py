"""Motion gate: cheap frame differencing decides whether a sampled frame goes to the detector.

Each frame is shrunk to `width`, turned grey and blurred, and compared with the frame of the last
detection (not the previous frame: slow movement adds up until it counts). Motion is a fraction of at
least `area_fraction` of pixels changing by at least `pixel_threshold` grey levels. Static frames are
skipped, but while tracks are alive the detector still runs every `idle_detect_s` so that a person
standing still keeps their track.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from revisit.edge.capture import Frame
from revisit.edge.config import MotionConfig


@dataclass
class MotionStats:
    frames: int = 0
    motion: int = 0
    idle_detects: int = 0
    motion_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class MotionGate:
    def __init__(self, config: MotionConfig):
        self.config = config
        self.stats = MotionStats()
        self._reference: np.ndarray | None = None
        self._last_detect: float | None = None

    def small_grey(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        width = min(self.config.width, w)
        height = max(1, round(h * width / w))
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def changed_fraction(self, grey: np.ndarray) -> float:
        """Fraction of pixels that changed since the reference frame (1.0 when there is none)."""
        if self._reference is None or self._reference.shape != grey.shape:
            return 1.0
        diff = cv2.absdiff(grey, self._reference)
        return float(np.count_nonzero(diff >= self.config.pixel_threshold)) / diff.size

    def should_detect(self, frame: Frame | np.ndarray, tracks_alive: bool, now: float) -> bool:
        """True when this frame should go to the detector. `now`: the frame's time in seconds."""
        image = frame.image if isinstance(frame, Frame) else frame
        self.stats.frames += 1
        if not self.config.enabled:
            self._last_detect = now
            return True
        grey = self.small_grey(image)
        if self.changed_fraction(grey) >= self.config.area_fraction:
            self.stats.motion += 1
        elif tracks_alive and (self._last_detect is None or now - self._last_detect >= self.config.idle_detect_s):
            self.stats.idle_detects += 1
        else:
            self.stats.motion_skipped += 1
            return False
        self._reference = grey
        self._last_detect = now
        return True

    def reset(self) -> None:
        """Forget the reference frame (e.g. after a reconnect): the next frame is detected."""
        self._reference = None
