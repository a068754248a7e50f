"""Face detection in photos and crops framed like UTKFace's own: two detectors behind one
interface, and the geometry that turns a detection into a model input.

Detectors (both run offline; their weights ship inside their PyPI packages):

- ``mtcnn``: MTCNN (Zhang et al. 2016, the ``mtcnn`` package, on TensorFlow) with five
  landmarks; the crop is *aligned*: rotated so the eyes are level, scaled and placed so the eyes
  sit where they sit in UTKFace's crops.
- ``haar``: OpenCV's bundled frontal-face Haar cascade (no landmarks); the crop is the box,
  rescaled and shifted as measured on UTKFace crops.

The framing constants below were measured on 200 race-balanced archive crops (40 per group):
the eyes on the bare crops, the Haar box with the crop pasted at 90-199 px into a scene
(``python benchmarks/run.py --only bench_crop_framing``; figures in ``notes/predict.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

DETECTORS: tuple[str, ...] = ("mtcnn", "haar")

#: Where UTKFace's crops put the eyes (MTCNN landmarks, median over 197 of 200 archive crops;
#: interquartile ranges 0.48-0.495, 0.28-0.295): the eye midpoint at this share of the crop side
#: from the left and from the top ...
UTKFACE_EYE_CENTRE = (0.49, 0.285)
#: ... and the distance between the eye centres as this share of the crop side (IQR 0.38-0.41).
UTKFACE_EYE_DISTANCE = 0.39
#: The Haar cascade's box against the UTKFace crop it lies in (median over the 170 of 200 pasted
#: crops it found): the crop's side is this many box widths (IQR 0.97-1.06) ...
HAAR_CROP_SCALE = 1.0165
#: ... and its centre lies this share of the box height below the box's centre (IQR 0.068-0.097).
HAAR_CROP_SHIFT = 0.083
#: Side (px) of UTKFace's published crops: aligned crops are cut at this size, then resized to the
#: model's input exactly as ingestion resizes the archive's crops.
UTKFACE_SIDE = 200


#: Share of faces each detector finds per race group, measured on synthetic photos: 300
#: race-balanced, seeded random archive crops (60 per group) scaled to 64-200 px, rotated up to
#: 20 degrees and pasted off-centre into 640x480 scenes, with predict's defaults. Copied into
#: every ``predict_report.json``. Measured by ``python benchmarks/run.py --only bench_predict``.
MEASURED_FOUND_BY_RACE: dict[str, dict] = {
    "mtcnn": {"White": 1.0, "Black": 1.0, "Asian": 0.9833, "Indian": 1.0, "Others": 0.9667},
    "haar": {"White": 0.8167, "Black": 0.5833, "Asian": 0.8333, "Indian": 0.7667, "Others": 0.8667},
}


def measured_detection(detector: str) -> dict:
    """``detector``'s measured detection rate per race group, the largest gap between two groups
    (share points as a fraction), N per group and how it was measured."""
    rates = MEASURED_FOUND_BY_RACE[detector]
    return {"by_race": dict(rates), "largest_gap": round(max(rates.values()) - min(rates.values()), 4),
            "n_per_group": 60, "settings": "predict defaults: min_face 40, thresholds [0.6, 0.7, 0.8], "
                                          "min_neighbors 5 (other settings: not measured)",
            "measured_on": "archive crops scaled to 64-200 px, rotated up to 20 degrees, pasted "
                           "off-centre into 640x480 scenes (python benchmarks/run.py --only bench_predict)"}


@dataclass(frozen=True)
class Face:
    """One detected face, in the photo's pixel coordinates (x right, y down, floats).

    ``box``: ``(x, y, w, h)`` of the detector's box; ``score``: the detector's confidence in
    [0, 1] (1.0 for Haar, which gives none); ``eyes``: ``((x, y), (x, y))`` centres of the eye on
    the image's left and on its right, or None (Haar).
    """

    box: tuple[float, float, float, float]
    score: float = 1.0
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None

    def scaled(self, factor: float) -> Face:
        """The same face in a photo ``factor`` times larger."""
        eyes = None if self.eyes is None else tuple((x * factor, y * factor) for x, y in self.eyes)
        return Face(tuple(v * factor for v in self.box), self.score, eyes)


@dataclass(frozen=True)
class Framing:
    """A square crop of a photo: centre ``(cx, cy)`` (px), ``side`` (px), ``angle`` (radians, the
    tilt of the eye line, counter-clockwise in image coordinates: y down)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0


def utkface_framing(face: Face, margin: float = 0.0) -> Framing:
    """The crop of ``face`` framed as UTKFace frames its faces, widened by ``margin`` of the crop's
    side on each side (0: UTKFace's framing; 0.1: 20 % wider; negative: tighter, > -0.5).

    With eyes: eyes level, eye distance ``UTKFACE_EYE_DISTANCE`` of the side, eye midpoint at
    ``UTKFACE_EYE_CENTRE``. Without: the box scaled by ``HAAR_CROP_SCALE`` and moved down by
    ``HAAR_CROP_SHIFT`` of its height.

    Raises:
        ValueError: margin <= -0.5, or a face with coincident eyes or an empty box.
    """
    if not margin > -0.5:
        raise ValueError(f"margin must be > -0.5 (a crop of positive size), got {margin}")
    widen = 1.0 + 2.0 * margin
    if face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        distance = math.hypot(rx - lx, ry - ly)
        if distance <= 0:
            raise ValueError("the two eye landmarks coincide: no scale to frame the face with")
        angle = math.atan2(ry - ly, rx - lx)
        side = distance / UTKFACE_EYE_DISTANCE
        # from the eye midpoint to the crop centre, in the crop's own (rotated) axes
        dx, dy = (0.5 - UTKFACE_EYE_CENTRE[0]) * side, (0.5 - UTKFACE_EYE_CENTRE[1]) * side
        cos, sin = math.cos(angle), math.sin(angle)
        cx = (lx + rx) / 2 + dx * cos - dy * sin
        cy = (ly + ry) / 2 + dx * sin + dy * cos
        return Framing(cx, cy, side * widen, angle)
    x, y, w, h = face.box
    if w <= 0 or h <= 0:
        raise ValueError(f"empty face box {face.box}")
    return Framing(x + w / 2, y + h / 2 + HAAR_CROP_SHIFT * h, max(w, h) * HAAR_CROP_SCALE * widen)


def cut(photo: np.ndarray, framing: Framing, size: int) -> np.ndarray:
    """The square ``framing`` of an RGB ``uint8`` photo (H x W x 3) as a ``(size, size, 3)``
    ``uint8`` crop, rotated upright; parts outside the photo repeat its edge pixels.

    The crop is cut at ``UTKFACE_SIDE`` px (area-averaged first when the face is larger), then
    resized with PIL's bilinear filter as ingestion resizes UTKFace's crops, so the model sees
    the same scale and the same resampling it trained on.
    """
    import cv2

    photo = np.ascontiguousarray(photo)
    cx, cy, side = framing.cx, framing.cy, framing.side
    shrink = side / (2 * UTKFACE_SIDE)
    if shrink > 1:  # a large face: average pixels down first, never alias them away
        reach = side * 0.75  # half the diagonal of the rotated square, and then some
        x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
        x1, y1 = min(photo.shape[1], int(cx + reach) + 1), min(photo.shape[0], int(cy + reach) + 1)
        region = photo[y0:y1, x0:x1]
        width = max(1, round(region.shape[1] / shrink))
        height = max(1, round(region.shape[0] / shrink))
        photo = cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)
        sx, sy = region.shape[1] / width, region.shape[0] / height
        cx, cy, side = (cx - x0) / sx, (cy - y0) / sy, side / sx
    scale = UTKFACE_SIDE / side
    cos, sin = math.cos(framing.angle) * scale, math.sin(framing.angle) * scale
    # photo -> crop: rotate by -angle about the centre, scale, move the centre to the crop's
    matrix = np.array([[cos, sin, UTKFACE_SIDE / 2 - cos * cx - sin * cy],
                       [-sin, cos, UTKFACE_SIDE / 2 + sin * cx - cos * cy]])
    crop = cv2.warpAffine(photo, matrix, (UTKFACE_SIDE, UTKFACE_SIDE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if size == UTKFACE_SIDE:
        return crop
    resized = Image.fromarray(crop).resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)


def crop_face(photo: np.ndarray, face: Face, size: int, margin: float = 0.0) -> np.ndarray:
    """``cut(photo, utkface_framing(face, margin), size)``: a ``(size, size, 3)`` uint8 crop."""
    return cut(photo, utkface_framing(face, margin), size)


# --- detectors ----------------------------------------------------------------------------------


def _cascade():
    import cv2

    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load its bundled face cascade from {path}")
    return cascade


class HaarDetector:
    """OpenCV's Haar cascade on histogram-equalised gray. ``min_face``: smallest face side (px);
    ``min_neighbors``: overlapping hits a face needs (higher: fewer false faces, more misses)."""

    name = "haar"
    landmarks = False

    def __init__(self, min_face: int = 40, min_neighbors: int = 5) -> None:
        self.min_face, self.min_neighbors = int(min_face), int(min_neighbors)
        self._cascade = _cascade()

    def detect(self, photos: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per RGB uint8 photo (H x W x 3), largest first."""
        import cv2

        found = []
        for photo in photos:
            gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(photo), cv2.COLOR_RGB2GRAY))
            boxes = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                                   minSize=(self.min_face, self.min_face))
            faces = [Face(tuple(float(v) for v in box)) for box in boxes]
            found.append(sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True))
        return found


_MTCNN_MIN_FACE = 20


def _shrink(photo: np.ndarray, factor: float) -> np.ndarray:
    """``photo`` (H x W x 3 uint8) ``factor`` (> 1) times smaller, pixels area-averaged."""
    import cv2

    size = (max(1, round(photo.shape[1] / factor)), max(1, round(photo.shape[0] / factor)))
    return cv2.resize(np.ascontiguousarray(photo), size, interpolation=cv2.INTER_AREA)


class MtcnnDetector:
    """MTCNN (``mtcnn`` package, TensorFlow) with eye landmarks. ``min_face``: smallest face side
    (px); ``thresholds``: confidence each of its three stages (P-, R-, O-Net) needs, in [0, 1].

    Photos of the same shape are detected together in one batch."""

    name = "mtcnn"
    landmarks = True

    def __init__(self, min_face: int = 40, thresholds: Sequence[float] = (0.6, 0.7, 0.8)) -> None:
        try:
            from mtcnn import MTCNN
        except ImportError as error:  # pragma: no cover - a dependency of the project
            raise RuntimeError("the mtcnn detector needs the `mtcnn` package: pip install mtcnn "
                               "(or choose detector: haar)") from error
        self.min_face = int(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self._mtcnn = MTCNN(device="CPU:0")

    def _run(self, photos: list[np.ndarray]) -> list[list[Face]]:
        # mtcnn 1.0.0 sizes its image pyramid as if min_face_size were 12: above 20 px its last
        # levels fall under P-Net's 12 px and TensorFlow fails, which the package reports as "no
        # face". So it always runs at 20 px, on photos shrunk by min_face / 20.
        factor = max(1.0, self.min_face / _MTCNN_MIN_FACE)
        if factor > 1:
            photos = [_shrink(photo, factor) for photo in photos]
        p, r, o = self.thresholds
        results = self._mtcnn.detect_faces(photos, min_face_size=_MTCNN_MIN_FACE, threshold_pnet=p,
                                           threshold_rnet=r, threshold_onet=o)
        found = []
        for faces in results:
            found.append(sorted(
                (Face(tuple(float(v) for v in f["box"]), float(f["confidence"]),
                      (tuple(float(v) for v in f["keypoints"]["left_eye"]),
                       tuple(float(v) for v in f["keypoints"]["right_eye"]))).scaled(factor)
                 for f in faces),
                key=lambda f: f.box[2] * f.box[3], reverse=True))
        return found

    def detect(self, photos: Sequence[np.ndarray], batch_size: int = 16) -> list[list[Face]]:
        """Faces per RGB uint8 photo (H x W x 3), largest first."""
        found: list[list[Face]] = [[] for _ in photos]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, photo in enumerate(photos):
            if min(photo.shape[:2]) < self.min_face:  # no face of min_face px fits in it
                continue
            by_shape.setdefault(tuple(photo.shape), []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                part = indices[start:start + batch_size]
                for i, faces in zip(part, self._run([np.ascontiguousarray(photos[i]) for i in part])):
                    found[i] = faces
        return found


def make_detector(name: str, min_face: int = 40, min_neighbors: int = 5,
                  thresholds: Sequence[float] = (0.6, 0.7, 0.8)) -> HaarDetector | MtcnnDetector:
    """A detector by name (``DETECTORS``); ``min_neighbors`` is Haar's, ``thresholds`` MTCNN's.

    Raises:
        ValueError: an unknown name.
    """
    if name == "haar":
        return HaarDetector(min_face, min_neighbors)
    if name == "mtcnn":
        return MtcnnDetector(min_face, thresholds)
    raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")


def detect_resized(detector, photos: Sequence[np.ndarray], max_side: int) -> list[list[Face]]:
    """``detector.detect`` on copies of the photos shrunk so their longer side is at most
    ``max_side`` px (a 24-megapixel photo is searched at about 2 megapixels), with the faces
    given back in each full photo's coordinates."""
    small, factors = [], []
    for photo in photos:
        factor = max(1.0, max(photo.shape[:2]) / max_side)
        small.append(_shrink(photo, factor) if factor > 1 else photo)
        factors.append(factor)
    return [[face.scaled(f) if f > 1 else face for face in faces]
            for faces, f in zip(detector.detect(small), factors)]


def crops_have_faces(crops: np.ndarray, detector: str = "haar", min_neighbors: int = 3) -> np.ndarray:
    """Boolean per face crop (N x S x S x 3 uint8, the face filling the frame): does ``detector``
    find a face in it? The crop is resized to 64 px and padded by 16 px of repeated edge on each
    side so the detector sees the whole face; Haar looks for 40-80 px faces, MTCNN for >= 24 px.
    """
    import cv2

    if len(crops) == 0:
        return np.zeros(0, dtype=bool)
    if detector == "haar":
        cascade = _cascade()
        found = np.zeros(len(crops), dtype=bool)
        for i, crop in enumerate(crops):
            gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
            gray = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
            gray = cv2.copyMakeBorder(gray, 16, 16, 16, 16, cv2.BORDER_REPLICATE)
            boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=min_neighbors,
                                             minSize=(40, 40), maxSize=(80, 80))
            found[i] = len(boxes) > 0
        return found
    if detector == "mtcnn":
        padded = [cv2.copyMakeBorder(cv2.resize(np.ascontiguousarray(crop), (64, 64), interpolation=cv2.INTER_AREA),
                                     16, 16, 16, 16, cv2.BORDER_REPLICATE) for crop in crops]
        faces = MtcnnDetector(min_face=24).detect(padded, batch_size=64)
        return np.array([len(f) > 0 for f in faces], dtype=bool)
    raise ValueError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
