"""Face quality: four components in [0, 1] and one combined score.

- detector:  the detector's confidence.
- size:      the face box's shorter side in pixels, 0 at `min_px` rising linearly to 1 at `good_px`.
- sharpness: variance of the Laplacian of the grey aligned 112x112 crop, v / (v + `sharp_half`)
             (0.5 at `sharp_half`, approaching 1 for crisp crops; blur drives it towards 0).
- pose:      from the landmarks: yaw from the nose's offset between the eyes, roll from the eye line.
             1 for a frontal face, 0 at `max_yaw_deg` of yaw; roll beyond `free_roll_deg` costs a little
             (alignment undoes roll, but extreme roll often comes with poor landmarks).
- score:     weighted geometric mean  det^0.2 * size^0.3 * sharpness^0.25 * pose^0.25.
             Any component at 0 gives 0: a tiny, blurred or profile face is never a "best shot".
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from revisit.shared.face import Quality

WEIGHTS = {"detector": 0.2, "size": 0.3, "sharpness": 0.25, "pose": 0.25}


def estimate_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) in degrees, rough but monotonic, from 5 landmarks."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose = pts[0], pts[1], pts[2]
    eye_vec = right_eye - left_eye
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        return 90.0, 0.0
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    # Nose offset from the eye midpoint along the eye line, in half eye distances.
    along = float(np.dot(nose - (left_eye + right_eye) / 2, eye_vec / eye_dist)) / (eye_dist / 2)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, along))))
    return yaw, roll


def laplacian_variance(crop_bgr: np.ndarray) -> float:
    gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY) if crop_bgr.ndim == 3 else crop_bgr
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess(
    det_score: float,
    box: np.ndarray,
    landmarks: np.ndarray,
    crop_bgr: np.ndarray,
    *,
    min_px: float = 16.0,
    good_px: float = 64.0,
    sharp_half: float = 100.0,
    max_yaw_deg: float = 60.0,
    free_roll_deg: float = 20.0,
) -> Quality:
    face_px = float(min(box[2] - box[0], box[3] - box[1]))
    size = _clip((face_px - min_px) / (good_px - min_px))
    lap = laplacian_variance(crop_bgr)
    sharpness = lap / (lap + sharp_half)
    yaw, roll = estimate_pose(landmarks)
    pose = _clip(1 - abs(yaw) / max_yaw_deg) * _clip(1 - max(0.0, abs(roll) - free_roll_deg) / 90)
    detector = _clip(det_score)
    parts = {"detector": detector, "size": size, "sharpness": sharpness, "pose": pose}
    score = combine(parts)
    return Quality(
        detector=detector,
        size=size,
        sharpness=sharpness,
        pose=pose,
        score=score,
        face_px=face_px,
        laplacian_var=lap,
        yaw_deg=yaw,
        roll_deg=roll,
    )


def combine(parts: dict[str, float]) -> float:
    if min(parts.values()) <= 0:
        return 0.0
    return float(math.exp(sum(WEIGHTS[k] * math.log(v) for k, v in parts.items())))


def _clip(v: float) -> float:
    return float(min(1.0, max(0.0, v)))
