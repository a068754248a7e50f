"""Test-time augmentation: every face is predicted as the average over a few views of it, the
same transformations the models trained on (``augmentation``: mirror image, zoom, shift).

Views (``inference`` parameters): the face itself; ``zooms`` (centre crops of side about S / z,
the same margin on every side, resized back to S x S, bilinear); with ``shift`` > 0 four copies moved by round(shift x S) pixels left,
right, up and down (edges reflected, as in training's ``RandomTranslation``); and with
``flip_average`` the mirror image of each of those. Age (years) and P(female) are the means over
the views. The views are Keras ops inside a wrapper model (:meth:`Views.wrap`), so evaluation,
prediction on photos and the exported models average exactly the same views on any backend.

Measured on the 3,000-face test split (README, "CNN from scratch"; conf/base/parameters.yml):
the default zooms 1.05 and 1.1 with their mirrors (6 views) against the face and its mirror alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# conf/base's inference.zooms, for the Python API and the console command (which read no Kedro
# configuration); a test keeps the two equal.
DEFAULT_ZOOMS = (1.05, 1.1)


def zoom_factors(zooms: Any, setting: str = "inference.zooms") -> tuple[float, ...]:
    """``zooms`` checked and as a tuple of floats: a list or tuple of factors in (1, 1.5], each
    once (``None`` or empty: no zoomed view). Raises ValueError, one line naming ``setting`` (the
    parameter, console option or argument the caller took them from)."""
    if zooms is None:
        return ()
    if isinstance(zooms, str | bytes | Mapping) or not isinstance(zooms, Iterable):
        raise ValueError(f"{setting} must be a list of factors in (1, 1.5], e.g. [1.05, 1.1], got {zooms!r}")
    zooms = tuple(zooms)
    if any(isinstance(z, bool) or not isinstance(z, int | float) or not 1.0 < z <= 1.5 for z in zooms):
        raise ValueError(f"{setting} must be factors in (1, 1.5], e.g. [1.05, 1.1], got {list(zooms)}")
    twice = sorted({z for z in zooms if zooms.count(z) > 1})
    if twice:
        raise ValueError(f"{setting} lists {', '.join(str(z) for z in twice)} more than once; list each zoom once")
    return tuple(float(z) for z in zooms)


@dataclass(frozen=True)
class Views:
    """Which views of a face are averaged: ``flip`` (bool, also the mirror image of every view),
    ``zooms`` (factors in (1, 1.5], each once: centre crops of side / factor), ``shift`` (fraction of the
    side in [0, 0.25): four shifted copies; 0: none)."""

    flip: bool = False
    zooms: tuple[float, ...] = ()
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool):
            raise ValueError(f"inference.flip_average must be true or false, got {self.flip!r}")
        zoom_factors(self.zooms)
        if isinstance(self.shift, bool) or not isinstance(self.shift, int | float) or not 0 <= self.shift < 0.25:
            raise ValueError(f"inference.shift must be a fraction of the side in [0, 0.25), got {self.shift!r}")

    @classmethod
    def from_params(cls, inference: Mapping[str, Any] | None) -> Views:
        """The ``inference`` parameters (``flip_average``, ``zooms``, ``shift``; absent: off).
        Raises ValueError naming the bad setting."""
        inference = inference or {}
        return cls(inference.get("flip_average", False), zoom_factors(inference.get("zooms")),
                   inference.get("shift", 0.0) or 0.0)

    @classmethod
    def of(cls, views: Views | bool, setting: str = "views") -> Views:
        """``views`` as a :class:`Views`: a ``Views`` as it is; a bool (Python or NumPy) is the face
        and its mirror image (True) or the face alone (False). Anything else (a string such as
        ``"false"``, a tuple of zooms, a dict of ``inference`` parameters) raises ValueError, one
        line naming ``setting``: it is never read as true."""
        if isinstance(views, cls):
            return views
        if isinstance(views, bool | np.bool_):
            return cls(flip=bool(views))
        raise ValueError(f"{setting} must be an age_gender.tta.Views or true/false, got {views!r}; "
                         f"e.g. Views(flip=True, zooms=(1.05, 1.1)), or Views.from_params(...) for the "
                         f"inference parameters")

    @property
    def count(self) -> int:
        """How many forward passes a face costs."""
        return (1 + len(self.zooms) + (4 if self.shift else 0)) * (2 if self.flip else 1)

    def describe(self) -> dict[str, Any]:
        """For reports and ``export_info.json``."""
        return {"flip_average": self.flip, "zooms": [float(z) for z in self.zooms], "shift": float(self.shift),
                "views": self.count}

    def wrap(self, model: Any) -> Any:
        """A functional ``keras.Model`` with ``model``'s input (B, S, S, 3) and its ``age`` and
        ``gender`` outputs (float32, (B, 1)), each the mean over the views; ``model`` itself when
        there is only one view. The views go through ``model`` as one batch of count x B."""
        if self.count == 1:
            return model
        import keras
        from keras import ops

        size = int(model.input_shape[1])
        image = keras.Input(shape=tuple(model.input_shape[1:]), name="image")
        views = [image]
        for zoom in self.zooms:
            start = int(round((size - size / zoom) / 2))  # the same margin on every side: the
            side = size - 2 * start                        # crop of the mirror is the mirrored crop
            views.append(ops.image.resize(image[:, start:start + side, start:start + side, :], (size, size),
                                          interpolation="bilinear"))
        pixels = int(round(self.shift * size))
        if self.shift:
            pixels = max(1, pixels)
            padded = ops.pad(image, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]], mode="reflect")
            for dx, dy in ((pixels, 0), (-pixels, 0), (0, -pixels), (0, pixels)):
                top, left = pixels - dy, pixels - dx
                views.append(padded[:, top:top + size, left:left + size, :])
        if self.flip:
            views += [ops.flip(view, axis=2) for view in views]
        outputs = model(ops.concatenate(views, axis=0))
        averaged = {}
        for name in ("age", "gender"):
            value = ops.cast(outputs[name], "float32")
            averaged[name] = keras.layers.Identity(name=name)(
                ops.mean(ops.reshape(value, (len(views), -1, value.shape[-1])), axis=0))
        return keras.Model(image, averaged, name=f"{model.name}_tta{len(views)}")
