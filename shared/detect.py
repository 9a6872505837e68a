"""Face detection: SCRFD and YuNet decoders over any inference backend.

Both take a BGR image of any size and return `Face` records (box, score, landmarks) in that
image's pixels. Images larger than `max_side` are shrunk to fit; smaller ones run at their own
size (padded to a multiple of 32), because upscaling small photos loses faces and costs time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import cv2
import numpy as np

from revisit.models.manifest import ModelSpec
from revisit.shared.backends.base import Session
from revisit.shared.config import DetectorSettings
from revisit.shared.errors import BackendError
from revisit.shared.face import Face

STRIDES = (8, 16, 32)


def _round_up(v: int, m: int = 32) -> int:
    return max(m, (v + m - 1) // m * m)


class Detector(ABC):
    def __init__(self, session: Session, spec: ModelSpec, settings: DetectorSettings):
        self.session = session
        self.spec = spec
        self.settings = settings
        self._batch_capable: bool | None = None

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in `image` (HxWx3 uint8 BGR), best score first."""
        _check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.settings.max_side / max(h, w))
        faces = self._detect_scaled(image, scale, canvas=None)
        if not faces and self.settings.closeup_retry and min(h, w) * scale >= 64:
            # A face that fills the frame is larger than the detector's biggest anchors: shrink
            # the image to half onto a canvas of the first pass's size and look again.
            rh, rw = _round_up(int(round(h * scale))), _round_up(int(round(w * scale)))
            faces = self._detect_scaled(image, scale / 2, canvas=(rh, rw))
        return self._min_size(faces)

    # -- several images at once (cameras whose frames are ready together) --------------------------------

    @property
    def batching(self) -> bool:
        """Whether `detect_many` makes one session call per canvas size: the backend gains from batches
        (GPUs; measured on CPU it costs, see README) and the graph takes a batch (probed once)."""
        return bool(getattr(self.session, "prefers_batches", False)) and self.batch_capable()

    def batch_capable(self) -> bool:
        """Does the graph take a batch of N and give per-image outputs? Probed once with two small images:
        a graph with a fixed batch of 1 (all the stock detectors) or one that folds the batch into its
        rows is not, and `detect_many` then runs one image per call."""
        if self._batch_capable is None and getattr(self.session, "batch_dim", None) == 1:
            self._batch_capable = False  # declared with a fixed batch of 1: never run it with more
        if self._batch_capable is None:
            rng = np.random.default_rng(0)
            canvases = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
            tensors = [self.preprocess(c) for c in canvases]
            try:
                batch = self.session.run(np.concatenate(tensors))
                singles = [self.session.run(t) for t in tensors]
                self._batch_capable = all(
                    out.shape[0] == 2
                    and all(np.allclose(out[i], single[name][0], atol=1e-3) for i, single in enumerate(singles))
                    for name, out in batch.items()
                )
            except Exception:  # the backend rejects a batch of 2: a fixed batch dimension
                self._batch_capable = False
        return self._batch_capable

    def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces of each image, as `detect` finds them; images of one canvas size go in one call when
        `batching`, else one call each."""
        if len(images) < 2 or not self.batching:
            return [self.detect(image) for image in images]
        for image in images:
            _check_image(image)
        prepared = [
            self._prepare(image, min(1.0, self.settings.max_side / max(image.shape[:2])), None) for image in images
        ]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (padded, _, _) in enumerate(prepared):
            groups.setdefault(padded.shape[:2], []).append(i)
        results: list[list[Face] | None] = [None] * len(images)
        for (ch, cw), members in groups.items():
            tensor = np.concatenate([self.preprocess(prepared[i][0]) for i in members])
            outputs = self.session.run(tensor)
            for j, i in enumerate(members):
                own = {name: out[j : j + 1] for name, out in outputs.items()}
                _, nh, nw = prepared[i]
                results[i] = self._finish(own, images[i], ch, cw, nh, nw)
        out: list[list[Face]] = []
        for image, faces in zip(images, results, strict=True):
            if not faces and self.settings.closeup_retry:
                out.append(self.detect(image))  # the close-up retry, rare: one image at a time
            else:
                out.append(self._min_size(faces or []))
        return out

    # -- one pass ---------------------------------------------------------------------------------------

    def _min_size(self, faces: list[Face]) -> list[Face]:
        if self.settings.min_face_px:
            return [f for f in faces if f.width >= self.settings.min_face_px]
        return faces

    def _prepare(self, image: np.ndarray, scale: float, canvas: tuple[int, int] | None) -> tuple[np.ndarray, int, int]:
        """The image shrunk by `scale` on a zero canvas (default: its size rounded up to 32); and its size."""
        h, w = image.shape[:2]
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        ch, cw = canvas or (_round_up(nh), _round_up(nw))
        padded = np.zeros((ch, cw, 3), dtype=np.uint8)
        padded[:nh, :nw] = resized
        return padded, nh, nw

    def _detect_scaled(self, image: np.ndarray, scale: float, canvas: tuple[int, int] | None) -> list[Face]:
        padded, nh, nw = self._prepare(image, scale, canvas)
        outputs = self.session.run(self.preprocess(padded))
        return self._finish(outputs, image, padded.shape[0], padded.shape[1], nh, nw)

    def _finish(
        self, outputs: dict[str, np.ndarray], image: np.ndarray, ch: int, cw: int, nh: int, nw: int
    ) -> list[Face]:
        h, w = image.shape[:2]
        boxes, scores, kps = self.decode(outputs, ch, cw)
        keep = scores >= self.settings.score_threshold
        boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
        if len(scores) == 0:
            return []
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        idx = cv2.dnn.NMSBoxes(
            xywh.tolist(), scores.tolist(), self.settings.score_threshold, self.settings.nms_threshold
        )
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        sx, sy = nw / w, nh / h
        faces = []
        for i in idx[np.argsort(-scores[idx])]:
            box = boxes[i] / np.array([sx, sy, sx, sy], dtype=np.float32)
            box = np.clip(box, 0, [w, h, w, h])
            pts = kps[i].reshape(5, 2) / np.array([sx, sy], dtype=np.float32)
            faces.append(Face(box=box, score=float(scores[i]), landmarks=pts))
        return faces

    @abstractmethod
    def preprocess(self, padded_bgr: np.ndarray) -> np.ndarray:
        """The 1x3xHxW float32 input tensor."""

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All candidate (boxes [N,4] x1y1x2y2, scores [N], landmarks [N,10]) in canvas pixels."""


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")


def _grid(h: int, w: int, stride: int, anchors: int) -> np.ndarray:
    """Anchor points (x, y) of a stride's grid, row-major, `anchors` per cell."""
    ys, xs = np.mgrid[: h // stride, : w // stride]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0) if anchors > 1 else centres


def _check_rows(model: str, stride: int, rows: int, expected: int, h: int, w: int) -> None:
    if rows != expected:
        raise BackendError(
            f"{model}: {rows} outputs at stride {stride} for a {w}x{h} input, expected {expected}; "
            "is the model of the family the manifest says?"
        )


class SCRFD(Detector):
    """SCRFD (InsightFace): strides 8/16/32, two anchors per cell, distance-encoded boxes."""

    def preprocess(self, padded_bgr: np.ndarray) -> np.ndarray:
        return cv2.dnn.blobFromImage(padded_bgr, 1.0 / 128, None, (127.5, 127.5, 127.5), swapRB=True)

    def decode(self, outputs, h, w):
        # Outputs are told apart by their shapes within the family (scores [N,1], boxes [N,4],
        # landmarks [N,10], stride 8 has the most rows), so backends may order them as they like.
        arrays = [np.asarray(a).reshape(a.shape[-2], a.shape[-1]) for a in outputs.values()]
        by_width: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
        for a in arrays:
            by_width[a.shape[1]].append(a)
        all_boxes, all_scores, all_kps = [], [], []
        for stride, scores, dists, kps in zip(
            STRIDES, *(sorted(by_width[k], key=lambda a: -a.shape[0]) for k in (1, 4, 10)), strict=True
        ):
            centres = _grid(h, w, stride, 2)
            _check_rows(self.spec.name, stride, len(scores), len(centres), h, w)
            d = dists * stride
            all_boxes.append(np.hstack([centres - d[:, :2], centres + d[:, 2:]]))
            all_scores.append(scores[:, 0])
            all_kps.append((kps.reshape(-1, 5, 2) * stride + centres[:, None, :]).reshape(-1, 10))
        return np.vstack(all_boxes), np.concatenate(all_scores), np.vstack(all_kps)


class YuNet(Detector):
    """YuNet (OpenCV zoo): one anchor per cell, score = sqrt(cls * obj), log-encoded sizes."""

    def preprocess(self, padded_bgr: np.ndarray) -> np.ndarray:
        return cv2.dnn.blobFromImage(padded_bgr, 1.0, None, (0, 0, 0), swapRB=False)

    def decode(self, outputs, h, w):
        all_boxes, all_scores, all_kps = [], [], []
        for stride in STRIDES:
            cls = outputs[f"cls_{stride}"].reshape(-1)
            obj = outputs[f"obj_{stride}"].reshape(-1)
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)
            kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)
            centres = _grid(h, w, stride, 1)
            _check_rows(self.spec.name, stride, len(cls), len(centres), h, w)
            scores = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            xy = centres + bbox[:, :2] * stride
            wh = np.exp(np.minimum(bbox[:, 2:], 10)) * stride
            all_boxes.append(np.hstack([xy - wh / 2, xy + wh / 2]))
            all_scores.append(scores)
            all_kps.append((kps * stride + centres[:, None, :]).reshape(-1, 10))
        return np.vstack(all_boxes), np.concatenate(all_scores), np.vstack(all_kps)


DETECTORS: dict[str, type[Detector]] = {"scrfd": SCRFD, "yunet": YuNet}


def create_detector(session: Session, spec: ModelSpec, settings: DetectorSettings) -> Detector:
    return DETECTORS[spec.family](session, spec, settings)
