"""Face image primitives shared by ingestion, external evaluation and prediction: UTKFace label
parsing, robust decoding to square RGB arrays, and ingestion's face check (the detectors
themselves live in :mod:`age_gender.detection`)."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageFile, ImageOps

ImageFile.LOAD_TRUNCATED_IMAGES = False

# ASCII digits only (re.ASCII: no Arabic-Indic or other Unicode digits) and the whole name
# (\Z, never "$", which also matches before a trailing newline). Use with ``fullmatch``.
# The label format is ``[age]_[gender]_[race]_[datetime]`` + ``.jpg``; the cropped release appends
# ``.chip.jpg``; ``.png`` copies are accepted too. Suffixes are lower case, as published.
UTKFACE_NAME = re.compile(r"^([0-9]+)_([01])_([0-4])_([0-9]{17})(?:\.jpg\.chip\.jpg|\.jpg|\.png)\Z",
                          re.ASCII)
UTKFACE_SUFFIXES = (".jpg.chip.jpg", ".jpg", ".png")
RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("male", "female")
MAX_AGE = 116  # the oldest age UTKFace documents (0-116 years)


@dataclass(frozen=True)
class FaceLabel:
    age: int
    gender: int
    race: int
    timestamp: str


class LabelRefusal(str):
    """Why a file name gives no labels (a ``str``); ``kind`` is the report key:
    ``malformed_name`` or ``implausible_age``."""

    kind: str

    def __new__(cls, text: str, kind: str = "malformed_name") -> LabelRefusal:
        refusal = super().__new__(cls, text)
        refusal.kind = kind
        return refusal


def _ascii_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def parse_utkface_name(path: str, max_age: int = MAX_AGE) -> FaceLabel | LabelRefusal:
    """Labels from ``[age]_[gender]_[race]_[datetime]`` + ``.jpg.chip.jpg``, ``.jpg`` or ``.png``,
    or why the name is refused.

    Nothing is guessed: the whole base name must match, in ASCII digits; otherwise a
    ``LabelRefusal`` (a ``str``) says why. An age above ``max_age`` (years), however many digits
    it has, is refused with ``kind == "implausible_age"``; nothing here raises.
    """
    name = PurePosixPath(path.replace("\\", "/")).name
    match = UTKFACE_NAME.fullmatch(name)
    if match:
        age, gender, race, stamp = match.groups()
        digits = age.lstrip("0") or "0"
        if len(digits) > len(str(max_age)) or int(digits) > max_age:
            shown = digits if len(digits) <= 12 else f"with {len(digits)} digits"
            return LabelRefusal(f"age {shown} is above {max_age}", "implausible_age")
        return FaceLabel(int(digits), int(gender), int(race), stamp)
    suffix = next((s for s in UTKFACE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return LabelRefusal(f"does not end in '.jpg.chip.jpg', '.jpg' or '.png' ({name[-20:]!r})")
    stem = name[: -len(suffix)]
    fields = stem.split("_")
    if len(fields) != 4:
        return LabelRefusal(f"has {len(fields)} underscore-separated fields, expected 4 "
                            f"(age_gender_race_datetime)")
    age, gender, race, stamp = fields
    if not _ascii_digits(age):
        return LabelRefusal(f"age field {age[:20]!r} is not a whole number in ASCII digits")
    if gender not in ("0", "1"):
        return LabelRefusal(f"gender field {gender[:20]!r} is not 0 or 1")
    if race not in ("0", "1", "2", "3", "4"):
        return LabelRefusal(f"race field {race[:20]!r} is not 0-4")
    return LabelRefusal(f"datetime field {stamp[:30]!r} is not 17 digits (ASCII)")


@dataclass(frozen=True)
class DecodedImage:
    """Result of decoding one file: arrays per size, or the reason it was set aside."""

    arrays: dict[int, np.ndarray] | None
    reason: str | None
    detail: str
    width: int = 0
    height: int = 0
    mode: str = ""


_EXIF_ORIENTATION = 0x0112
# Modes PIL converts to RGB faithfully; deep single-band modes are rescaled by their own range.
_DEEP_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
_PLAIN_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr",
                "LAB", "HSV")


def _deep_to_l(image: Image.Image) -> Image.Image | str:
    """A deep single-band image (16/32-bit integer, float) as 8-bit gray, scaled from its own
    minimum to its own maximum; a reason string when it has non-finite values."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        return "has NaN or infinite pixel values"
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return f"every pixel is {low:g}"
    scaled = np.rint((values - low) * (255.0 / (high - low)))
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _open_rgb(data: bytes, max_pixels: int, min_side: int, draft: int | None) -> tuple[Image.Image | None, DecodedImage]:
    """Decode image bytes to an RGB PIL image, EXIF orientation applied, deep gray scaled by its
    own range; ``(None, refusal)`` when it cannot be, else ``(image, DecodedImage without arrays)``
    carrying the original size and mode. ``draft``: let JPEG decode at a reduced scale that is
    still at least this many px."""
    if not data:
        return None, DecodedImage(None, "empty_file", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            mode = image.mode
            if width * height > max_pixels:
                return None, DecodedImage(None, "decompression_bomb",
                                          f"{width}x{height} is over {max_pixels} pixels", width, height, mode)
            if min(width, height) < min_side:
                return None, DecodedImage(None, "too_small", f"{width}x{height} has a side under {min_side} px",
                                          width, height, mode)
            if mode not in _DEEP_MODES and mode not in _PLAIN_MODES:
                return None, DecodedImage(None, "unsupported_mode", f"pixel mode {mode!r}", width, height, mode)
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if image.format == "JPEG" and draft:
                image.draft("RGB", (draft, draft))
            image.load()
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return None, DecodedImage(None, "decompression_bomb", str(error))
    except Image.UnidentifiedImageError:  # its text names PIL's in-memory buffer, not the file
        return None, DecodedImage(None, "unreadable_image", "not an image format Pillow can read")
    except Exception as error:  # PIL raises many types for broken files
        return None, DecodedImage(None, "unreadable_image", f"{type(error).__name__}: {error}")
    if image.mode in _DEEP_MODES:
        image = _deep_to_l(image)
        if isinstance(image, str):
            reason = "constant_image" if image.startswith("every pixel") else "unsupported_mode"
            return None, DecodedImage(None, reason, f"{mode} image {image}", width, height, mode)
    if image.mode != "RGB":
        if "A" in image.getbands() or image.mode == "P":
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
    return image, DecodedImage(None, None, "", width, height, mode)


def decode_face(data: bytes, sizes: Sequence[int], max_pixels: int, min_side: int = 1,
                refuse_constant: bool = True) -> DecodedImage:
    """Decode image bytes into square RGB ``uint8`` arrays of shape ``(size, size, 3)``, one per size.

    The EXIF orientation is applied first. Grayscale, palette, RGBA or CMYK images are converted
    to RGB; 16-bit, 32-bit integer and float grayscale images are scaled by their own range;
    a non-square image is centre cropped to a square. Never raises for bad data: comes back with
    ``reason`` set instead: ``empty_file``, ``unreadable_image`` (broken or truncated),
    ``decompression_bomb`` (over ``max_pixels``), ``too_small`` (a side under ``min_side`` px),
    ``unsupported_mode`` (a pixel format not converted faithfully) or ``constant_image``
    (every pixel the same: a blank, not a face; ``refuse_constant=False`` keeps it).
    """
    image, decoded = _open_rgb(data, max_pixels, min_side, max(sizes))
    if image is None:
        return decoded
    width, height, mode = decoded.width, decoded.height, decoded.mode
    side = min(image.size)
    if image.size[0] != image.size[1]:
        left = (image.size[0] - side) // 2
        top = (image.size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side))
    arrays = {}
    for size in sizes:
        resized = image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        arrays[size] = np.asarray(resized, dtype=np.uint8)
    smallest = arrays[min(arrays)]
    if refuse_constant and smallest.min() == smallest.max():  # checked on the cached array: cheap, and what trains
        return DecodedImage(None, "constant_image",
                            f"every pixel is {smallest.flat[0]}: a blank, not a face", width, height, mode)
    return DecodedImage(arrays, None, "", width, height, mode)


def decode_photo(data: bytes, max_pixels: int) -> np.ndarray | DecodedImage:
    """A whole photo as an RGB ``uint8`` array (H x W x 3), at full size, decoded as
    :func:`decode_face` decodes (EXIF orientation applied, 16-bit and float gray scaled by their
    own range, alpha over black); a :class:`DecodedImage` with ``reason`` set when it cannot be
    (``empty_file``, ``unreadable_image``, ``decompression_bomb``, ``unsupported_mode``, or
    ``constant_image`` for a deep image of one value). Never raises for bad data."""
    image, decoded = _open_rgb(data, max_pixels, 1, None)
    return decoded if image is None else np.asarray(image, dtype=np.uint8)


def _decode_chunk(args: tuple[list[bytes], tuple[int, ...], int, int]) -> list[DecodedImage]:
    chunk, sizes, max_pixels, min_side = args
    return [decode_face(data, sizes, max_pixels, min_side) for data in chunk]


def _chunks(items: Sequence, count: int) -> list[Sequence]:
    step = max(1, -(-len(items) // count))
    return [items[i : i + step] for i in range(0, len(items), step)]


def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: safe to start after TensorFlow has created its threads in the parent.
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver"))


def iter_decoded(blobs: Sequence[bytes], sizes: Sequence[int], max_pixels: int,
                 workers: int = 1, min_side: int = 1) -> Iterator[DecodedImage]:
    """``decode_face`` over many files, in order, one result at a time (in ``workers`` processes
    when more than one), so a caller can store each result and let it go."""
    sizes = tuple(int(s) for s in sizes)
    if workers <= 1 or len(blobs) < 256:
        for data in blobs:
            yield decode_face(data, sizes, max_pixels, min_side)
        return
    jobs = [(list(chunk), sizes, max_pixels, min_side) for chunk in _chunks(blobs, workers * 8)]
    with _pool(workers) as pool:
        for part in pool.map(_decode_chunk, jobs):
            yield from part


def decode_many(blobs: Sequence[bytes], sizes: Sequence[int], max_pixels: int,
                workers: int = 1, min_side: int = 1) -> list[DecodedImage]:
    """``decode_face`` over many files, in ``workers`` processes when more than one."""
    return list(iter_decoded(blobs, sizes, max_pixels, workers, min_side))


# --- face check of ingestion -------------------------------------------------------------------


def _crop_has_face(args: tuple[np.ndarray, str, int]) -> np.ndarray:
    from age_gender.detection import crops_have_faces

    if args[1] == "haar":  # each worker process runs one cascade on one core
        import cv2

        cv2.setNumThreads(1)
    return crops_have_faces(*args)


def crops_with_faces(images: np.ndarray, min_neighbors: int = 3, workers: int = 1,
                     detector: str = "haar") -> np.ndarray:
    """Boolean per face crop (N x S x S x 3 uint8): does ``detector`` (``haar`` or ``mtcnn``,
    see :mod:`age_gender.detection`) find a face in it? Haar runs in ``workers`` processes;
    MTCNN in this one (TensorFlow uses every core itself).

    Raises:
        ValueError: an unknown detector name.
    """
    if len(images) == 0 or detector != "haar" or workers <= 1 or len(images) < 512:
        return _crop_has_face((images, detector, min_neighbors))
    jobs = [(np.asarray(chunk), detector, min_neighbors) for chunk in _chunks(images, workers * 4)]
    with _pool(workers) as pool:
        return np.concatenate(list(pool.map(_crop_has_face, jobs)))
