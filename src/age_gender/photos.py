"""Age and gender for every face in ordinary photos: find the faces, cut each as UTKFace crops
are cut (:mod:`age_gender.detection`), predict them in batches. Used by the ``predict``
pipeline, by :func:`predict_faces` (Python) and by ``age-gender predict`` (console).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from age_gender.faces import GENDERS, decode_photo
from age_gender.tta import DEFAULT_ZOOMS, Views, zoom_factors

#: Columns of a predictions table: the photo, the face's number in it (largest first), its box
#: (px, ints), the detector's confidence, predicted age (years), gender and probabilities.
COLUMNS = ["file", "face", "x", "y", "w", "h", "score", "age", "gender", "female_prob", "gender_prob"]
DEFAULT_MAX_PIXELS = 60_000_000
#: A batch of photos is closed early once it holds this many pixels (about 600 MB decoded).
BATCH_PIXELS = 200_000_000


@dataclass(frozen=True)
class DetectSettings:
    """How faces are found and cut: see ``conf/base/parameters_predict.yml`` for each field."""

    detector: str = "mtcnn"
    min_face: int = 40
    min_neighbors: int = 5
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    margin: float = 0.0
    detect_max_side: int = 1600

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DetectSettings:
        """From the (validated) ``predict`` parameter group."""
        return cls(str(params["detector"]), int(params["min_face"]), int(params["min_neighbors"]),
                   tuple(float(t) for t in params["thresholds"]), float(params["margin"]),
                   int(params["detect_max_side"]))


@dataclass
class PhotoResult:
    """One photo's outcome: ``photo`` (RGB uint8, None when unreadable), its ``rows`` (one dict per
    face, keys :data:`COLUMNS` but ``file``) or ``problem`` (why it could not be read)."""

    name: str
    photo: np.ndarray | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def load_model(model: Any):
    """A Keras model as given, or loaded from a ``.keras`` path (the project's layers registered).

    A folder of Kedro versions (``transfer.keras/<timestamp>/transfer.keras``, as the pipelines
    save models) means its newest version.

    Raises:
        ValueError: the path does not exist, is not a ``.keras`` file, is damaged (not a zip:
            cut short), or Keras cannot load it.
    """
    if not isinstance(model, (str, os.PathLike)):
        if not (hasattr(model, "predict") and hasattr(model, "input_shape")):
            raise ValueError(f"model must be a keras.Model or a path to a .keras file, got {type(model).__name__}")
        return model
    from age_gender.datasets import damaged_model, newest_version

    path = newest_version(Path(model).expanduser())  # a Kedro versioned model folder: its newest version
    if not path.is_file():
        raise ValueError(f"no model file at '{path}': give the path of a trained .keras model "
                         f"(e.g. data/06_models/transfer.keras, its newest version, or "
                         f"data/06_models/transfer.keras/<version>/transfer.keras)")
    if path.suffix != ".keras":
        raise ValueError(f"'{path}' is not a .keras model file: give a model saved by this project (.keras)")
    import keras

    import age_gender.models  # noqa: F401  (registers the custom layers)

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        damaged = damaged_model(path)
        if damaged:
            raise ValueError(f"{damaged}: retrain it, or give another version of the model") from None
        raise ValueError(f"cannot load the model '{path}' ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}): is it a complete .keras file?") from None


class PhotoPredictor:
    """Faces found, cut and predicted, a batch of photos at a time.

    ``model``: a loaded ``keras.Model`` with a square uint8 RGB input and ``age``/``gender``
    outputs (this project's models); ``settings``: :class:`DetectSettings`; ``views``: the
    test-time views averaged per face (:class:`age_gender.tta.Views`, as the ``inference``
    parameters give them to evaluation), or a bool: the face and its mirror image (True) or the
    face alone.
    """

    def __init__(self, model: Any, settings: DetectSettings = DetectSettings(), views: Views | bool = True) -> None:
        from age_gender.detection import make_detector

        self.model = load_model(model)
        shape = self.model.input_shape
        if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None or shape[3] != 3:
            raise ValueError(f"model input must be (batch, size, size, 3), got {shape}")
        self.size = int(shape[1])
        self.settings = settings
        self.views = Views.of(views)
        # wrapped once: a new wrapper per batch would make Keras trace a new predict function each time
        self._averaged = self.views.wrap(self.model)
        self.detector = make_detector(settings.detector, settings.min_face, settings.min_neighbors,
                                      settings.thresholds)

    def predict(self, photos: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """Per RGB uint8 photo (H x W x 3): one dict per face found, largest first, keys
        :data:`COLUMNS` but ``file``; all faces of the batch go through the model together."""
        from age_gender.detection import crop_face, detect_resized
        from age_gender.reporting import predict_faces as predict_crops

        found = detect_resized(self.detector, photos, self.settings.detect_max_side)
        crops = [crop_face(photo, face, self.size, self.settings.margin)
                 for photo, faces in zip(photos, found) for face in faces]
        if crops:
            ages, female = predict_crops(self._averaged, np.stack(crops))  # the views are inside
        else:
            ages, female = np.zeros(0), np.zeros(0)
        results, k = [], 0
        for faces in found:
            rows = []
            for number, face in enumerate(faces):
                prob = float(female[k])
                gender = int(prob >= 0.5)
                x, y, w, h = face.box
                rows.append({"face": number, "x": int(round(x)), "y": int(round(y)), "w": int(round(w)),
                             "h": int(round(h)), "score": round(face.score, 4), "age": round(float(ages[k]), 1),
                             "gender": GENDERS[gender], "female_prob": round(prob, 4),
                             "gender_prob": round(prob if gender else 1 - prob, 4)})
                k += 1
            results.append(rows)
        return results


def predict_stream(predictor: PhotoPredictor, items: Iterable[tuple[str, Callable[[], np.ndarray | str]]],
                   batch_size: int = 32, total: int | None = None, progress: bool = False) -> Iterator[PhotoResult]:
    """Each ``(name, read)`` item's :class:`PhotoResult`, in order. ``read()`` gives the photo
    (RGB uint8, H x W x 3) or a string saying why it cannot be read; photos are read, searched and
    predicted ``batch_size`` at a time (only one batch in memory; a batch closes early once its
    photos hold ``BATCH_PIXELS`` pixels), with a Keras progress bar counting photos when
    ``progress``."""
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(total, unit_name="photo")
    done = 0
    batch: list[tuple[str, np.ndarray | str]] = []

    def flush() -> Iterator[PhotoResult]:
        readable = [(name, photo) for name, photo in batch if not isinstance(photo, str)]
        predicted = iter(predictor.predict([photo for _, photo in readable])) if readable else iter(())
        for name, photo in batch:
            if isinstance(photo, str):
                yield PhotoResult(name, None, problem=photo)
            else:
                yield PhotoResult(name, photo, next(predicted))

    pixels = 0
    for name, read in items:
        photo = read()
        batch.append((name, photo))
        if not isinstance(photo, str):
            pixels += photo.shape[0] * photo.shape[1]
        if len(batch) >= batch_size or pixels >= BATCH_PIXELS:
            yield from flush()
            done += len(batch)
            batch, pixels = [], 0
            if bar is not None:
                bar.update(done)
    if batch:
        yield from flush()
        done += len(batch)
    if bar is not None:
        bar.update(done, finalize=True)


def reader(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> Callable[[], np.ndarray | str]:
    """A ``read()`` for :func:`predict_stream` over a photo's bytes: the photo, or
    ``"<reason>: <detail>"`` (``too_large`` over ``max_bytes``, or a :func:`decode_photo` reason)."""

    def read() -> np.ndarray | str:
        if max_bytes is not None and len(data) > max_bytes:
            return f"too_large: {len(data)} bytes is over predict.max_file_mb ({max_bytes / 1e6:g} MB)"
        photo = decode_photo(data, max_pixels)
        return photo if isinstance(photo, np.ndarray) else f"{photo.reason}: {photo.detail}"

    return read


def _array_reader(image: np.ndarray, index: int) -> Callable[[], np.ndarray]:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"images[{index}] must be an H x W x 3 uint8 RGB array or a path, got "
                         f"shape {shape} dtype {dtype}")
    return lambda: image


def _path_reader(path: Path, max_pixels: int) -> Callable[[], np.ndarray | str]:
    if not path.is_file():
        raise ValueError(f"no image file at '{path}': give existing image paths or arrays")

    def read() -> np.ndarray | str:
        return reader(path.read_bytes(), max_pixels)()

    return read


def predict_faces(model: Any, images: Sequence[str | os.PathLike | np.ndarray] | str | os.PathLike | np.ndarray, *,
                  detector: str = "mtcnn", margin: float = 0.0, min_face: int = 40,
                  flip_average: bool = True, zooms: Sequence[float] = DEFAULT_ZOOMS, batch_size: int = 32,
                  max_pixels: int = DEFAULT_MAX_PIXELS,
                  progress: bool = False) -> pd.DataFrame:
    """Age and gender of every face in ``images``.

    Args:
        model: a loaded ``keras.Model`` of this project, or the path of its ``.keras`` file.
        images: image file paths (any format Pillow reads; EXIF rotation applied, 16-bit gray
            scaled by its range) and/or RGB ``uint8`` arrays of shape ``(H, W, 3)``; one item alone
            is accepted too.
        detector: ``mtcnn`` (eye-aligned crops, the default) or ``haar``.
        margin: extra share of the crop side on each side of UTKFace's framing (0: as trained).
        min_face: smallest face side looked for, px.
        flip_average: average each face's prediction with its mirror image's (of every view).
        zooms: test-time centre crops zoomed in by these factors, in (1, 1.5] (default: those of
            conf/base's ``inference.zooms``; ``()``: the face alone). See ``age_gender.tta``.
        batch_size: photos searched and predicted together.
        max_pixels: larger photos are refused as decompression bombs.
        progress: show a Keras progress bar.

    Returns:
        One row per face found, columns ``image`` (the path as given, or the array's index),
        then :data:`COLUMNS` but ``file``: ``face`` (0 = largest in its image), ``x``, ``y``, ``w``,
        ``h`` (px, int), ``score`` (detector confidence), ``age`` (years), ``gender`` (``male`` /
        ``female``), ``female_prob`` and ``gender_prob`` (of the predicted gender), floats.
        An image without a face has no row.

    Raises:
        ValueError: one line naming the problem: a model that is not a ``.keras`` file or does not
            load, an array that is not ``H x W x 3`` uint8, a path that is no file, an image that
            cannot be decoded (with the reason), an unknown detector or bad setting.
    """
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    elif isinstance(images, np.ndarray) and images.ndim != 4:  # a grayscale H x W array is no list of rows
        raise ValueError(f"images must be an H x W x 3 uint8 RGB array, a stack of them or a list, got an array "
                         f"of shape {images.shape}; a grayscale image: np.repeat(gray[..., None], 3, axis=-1)")
    from age_gender.detection import DETECTORS

    if detector not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if not margin > -0.5:
        raise ValueError(f"margin must be > -0.5, got {margin}")
    if int(min_face) < 12:
        raise ValueError(f"min_face must be >= 12 px, got {min_face}")
    if not isinstance(flip_average, bool | np.bool_):  # bool("no") is True: never guess
        raise ValueError(f"flip_average must be True or False, got {flip_average!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    items = []
    for index, image in enumerate(images):
        if isinstance(image, (str, os.PathLike)):
            items.append((str(image), _path_reader(Path(image).expanduser(), max_pixels)))
        else:
            items.append((index, _array_reader(image, index)))
    views = Views(bool(flip_average), zoom_factors(zooms, "zooms"))  # a checked bool
    predictor = PhotoPredictor(model, DetectSettings(detector, int(min_face), margin=float(margin)), views)
    rows = []
    for result in predict_stream(predictor, items, batch_size, len(items), progress):
        if result.problem:
            raise ValueError(f"cannot read image '{result.name}': {result.problem}")
        rows.extend({"image": result.name, **row} for row in result.rows)
    return pd.DataFrame(rows, columns=["image", *COLUMNS[1:]])


def annotate(photo: np.ndarray, rows: Sequence[dict[str, Any]]):
    """The photo (RGB uint8) as a PIL image with each face's box and ``age gender (prob)``."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(photo)
    draw = ImageDraw.Draw(image)
    for row in rows:
        x, y, w, h = row["x"], row["y"], row["w"], row["h"]
        draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=max(2, w // 60))
        draw.text((x, max(0, y - 12)), f"{row['age']:.0f} {row['gender']} ({row['gender_prob']:.2f})",
                  fill=(255, 40, 40))
    return image


#: Ingestion's reasons for a whole photo it cannot turn into one face crop (``detect_faces``).
NO_FACE, SEVERAL_FACES = "no_face_found", "several_faces"


def iter_face_crops(blobs: Sequence[bytes], sizes: Sequence[int], max_pixels: int, min_side: int,
                    settings: DetectSettings, batch_size: int = 16) -> Iterator[tuple[Any, str]]:
    """Ingestion of whole photos (one face each): every photo is decoded as ``decode_photo``
    decodes, searched by the detector and cut exactly as ``predict`` cuts faces
    (``detection.detect_resized`` then ``detection.crop_face`` with ``settings.margin``: eye-aligned
    with MTCNN, the measured UTKFace framing), at each of ``sizes`` (px).

    Yields, in order, one ``(faces.DecodedImage, framing)`` per blob: ``arrays`` = ``{size: uint8
    (size, size, 3)}`` and ``framing`` = ``"<detector> cx=.. cy=.. side=.. angle=.. margin=.."`` (px,
    degrees, in the full photo) when exactly one face is found; otherwise ``arrays`` None, ``framing``
    "" and ``reason`` the decoding's (``unreadable_image``, ``too_small`` under ``min_side`` px ...),
    ``no_face_found`` or ``several_faces`` (none is picked: which face the labels describe cannot be
    known), with a detail line. ``batch_size`` photos are held decoded at once."""
    from age_gender.detection import crop_face, detect_resized, make_detector, utkface_framing
    from age_gender.faces import DecodedImage, _open_rgb

    detector = make_detector(settings.detector, settings.min_face, settings.min_neighbors, settings.thresholds)
    for start in range(0, len(blobs), batch_size):
        opened = [_open_rgb(data, max_pixels, min_side, None) for data in blobs[start:start + batch_size]]
        photos = {i: np.asarray(image, dtype=np.uint8) for i, (image, _) in enumerate(opened) if image is not None}
        found = dict(zip(photos, detect_resized(detector, list(photos.values()), settings.detect_max_side)))
        for i, (image, decoded) in enumerate(opened):
            if image is None:
                yield decoded, ""
                continue
            faces, size = found[i], f"{decoded.width}x{decoded.height}"
            if len(faces) != 1:
                reason = NO_FACE if not faces else SEVERAL_FACES
                detail = (f"{settings.detector} found no face in the {size} photo" if not faces else
                          f"{settings.detector} found {len(faces)} faces in the {size} photo; one face per "
                          f"photo is expected and none is picked")
                yield DecodedImage(None, reason, detail, decoded.width, decoded.height, decoded.mode), ""
                continue
            framing = utkface_framing(faces[0], settings.margin)
            arrays = {int(s): crop_face(photos[i], faces[0], int(s), settings.margin) for s in sizes}
            yield (DecodedImage(arrays, None, "", decoded.width, decoded.height, decoded.mode),
                   f"{settings.detector} cx={framing.cx:.1f} cy={framing.cy:.1f} side={framing.side:.1f} "
                   f"angle={np.degrees(framing.angle):.1f} margin={settings.margin:g}")
