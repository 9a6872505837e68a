"""Regions: dead zones and regions of interest, polygons in normalised coordinates (0..1 of the frame).

A face is judged by its centre: dropped when it lies in a dead zone, or when regions of interest are set
and it lies in none of them. A centre on a polygon's edge counts as inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from revisit.edge.config import CameraConfig
from revisit.shared.face import Face

Polygon = Sequence[Sequence[float]]


@dataclass
class RegionStats:
    kept: int = 0
    in_dead_zone: int = 0
    outside_roi: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _contour(polygon: Polygon) -> np.ndarray:
    return np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)


def inside_any(contours: list[np.ndarray], x: float, y: float) -> bool:
    return any(cv2.pointPolygonTest(c, (x, y), False) >= 0 for c in contours)


class RegionFilter:
    def __init__(self, dead_zones: Sequence[Polygon] = (), roi: Sequence[Polygon] = ()):
        self.dead_zones = [_contour(p) for p in dead_zones]
        self.roi = [_contour(p) for p in roi]
        self.stats = RegionStats()

    @classmethod
    def for_camera(cls, camera: CameraConfig) -> RegionFilter:
        return cls(camera.dead_zones, camera.roi)

    @property
    def active(self) -> bool:
        return bool(self.dead_zones or self.roi)

    def keep(self, face: Face, frame_w: int, frame_h: int) -> bool:
        cx, cy = face.center
        x, y = cx / frame_w, cy / frame_h
        if self.roi and not inside_any(self.roi, x, y):
            self.stats.outside_roi += 1
            return False
        if inside_any(self.dead_zones, x, y):
            self.stats.in_dead_zone += 1
            return False
        self.stats.kept += 1
        return True
