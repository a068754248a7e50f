"""Typed schemas of every parameter group (pydantic v2), and their validation before a run.

One model per top-level key of ``conf/*/parameters*.yml``. The models hold types, ranges and the
allowed values of every choice, never a default: the defaults live only in ``conf/base``, and every
key of a group is required (``X | None`` where ``null`` is allowed). Unknown keys are refused
(``extra="forbid"``) with the nearest known name. The only optional keys are those of partial
overrides (``scratch.training``, ``scratch_search.training``: any subset of ``scratch_training``)
and the per-candidate builder options of an architecture; an absent key there means "the
training's value", and an explicit ``null`` is refused.

The models are usable as node type hints (Kedro 1.7 then validates and passes the instance), but
the project does not rely on that: :func:`validate_parameters`, called from a ``before_pipeline_run``
hook, checks every group a node of the pipeline reads (and every top-level key) before the first
node runs, and raises :class:`ParameterError` whose message is one line, e.g.
``scratch_training.epochs must be an integer >= 1, got 'abc'``.

This module imports no Keras: validating costs milliseconds. The backbone and head names are
repeated here as ``Literal`` choices; ``tests/test_params.py`` keeps them equal to
``age_gender.models.BACKBONES`` and ``HEAD_STRUCTURES``.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

__all__ = [
    "GROUPS", "RUNTIME_KEYS", "ParameterError", "validate_group", "validate_parameters",
    "groups_read_by", "Inference", "Evaluation", "Device", "Ingestion", "Predict", "Split", "ScratchTraining",
    "ScratchTrainingOverrides", "Scratch", "ScratchSearch", "Distill", "Transfer", "Export", "Fairness",
]


class ParameterError(ValueError):
    """A parameter value or key that is not allowed. The message is one line naming the parameter
    path, the value given and what is allowed; several problems are joined with ``"; "``."""


# --- value types -------------------------------------------------------------------------------

Count = Annotated[int, Field(ge=1)]                 # epochs, patience, batch sizes, units, trials
NonNegativeInt = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0)]                  # numpy's and Keras's seeds are non-negative
PositiveFloat = Annotated[float, Field(gt=0)]       # learning rates, multipliers, budgets
NonNegativeFloat = Annotated[float, Field(ge=0)]    # l2, min_delta, loss weights, warm-up epochs
Rate = Annotated[float, Field(ge=0, lt=1)]          # dropout, shift, zoom, contrast: [0, 1)
Momentum = Annotated[float, Field(gt=0, lt=1)]      # EMA momentum: (0, 1)
OpenFraction = Annotated[float, Field(gt=0, lt=1)]  # a share of a set, strictly inside (0, 1)
ImageSize = Annotated[int, Field(ge=16, le=1024)]   # px, as ingestion accepts them

BackboneName = Literal["mobilenet_v2", "mobilenet", "xception", "vgg16", "vgg19", "resnet50_v2",
                       "efficientnet_b4", "inception_v3"]
# Smallest input keras.applications accepts per backbone (px); equal to models.BACKBONES (tested).
BACKBONE_MIN_SIZE: dict[str, int] = {"mobilenet_v2": 32, "mobilenet": 32, "xception": 71, "vgg16": 32,
                                     "vgg19": 32, "resnet50_v2": 32, "efficientnet_b4": 32,
                                     "inception_v3": 75}
HeadStructure = Literal["dense-dense-dropout", "dense-bn-dropout", "bn-dense-dropout",
                        "dense-dropout-bn", "dense-dropout-bn-dropout", "dense-bn", "dense-dropout"]
LrSchedule = Literal["constant", "cosine"]
AgeLoss = Literal["huber", "mae", "mse"]
CrossStitch = Literal["none", "conv", "dense", "both"]
Pooling = Literal["flatten", "avg"]
MixedPrecision = Literal["auto", "none", "float32", "mixed_float16", "mixed_bfloat16"]
# A grid candidate's name becomes a Kedro namespace, a file name and an Airflow task id.
CandidateName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class _Group(BaseModel):
    """Base of every schema: unknown keys refused, no type coercion (``"36"`` is not 36; an
    integer is accepted where a number is expected), instances immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any):
        """pydantic's ``model_validate``, raising :class:`ParameterError` (one line, paths
        prefixed with the group's name) instead of ``ValidationError``: Kedro's own validation
        of node type hints then carries the same line."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as error:
            group = next((name for name, model in GROUPS.items() if model is cls), cls.__name__)
            raise ParameterError("; ".join(_messages(group, cls, error))) from None


# --- shared pieces -------------------------------------------------------------------------------


class LossWeights(_Group):
    """Weights of the two losses in the total loss (dimensionless)."""

    age: NonNegativeFloat
    gender: NonNegativeFloat

    @model_validator(mode="after")
    def _not_both_zero(self):
        if self.age == 0 and self.gender == 0:
            raise ValueError("must give at least one task a weight > 0, got age 0 and gender 0")
        return self


class Augmentation(_Group):
    """Training-time augmentation: flip (bool), shift and zoom (shares of the side, [0, 1)),
    rotation (degrees, 0-180), contrast (share, [0, 1)); ``single_resampling``: flip, shift, zoom
    and rotation as one affine map, resampled once (``models.RandomAffine``)."""

    enabled: bool
    flip: bool
    shift: Rate
    zoom: Rate
    rotation_degrees: Annotated[float, Field(ge=0, le=180)]
    contrast: Rate
    single_resampling: bool


class AgeHead(_Group):
    """How the age is predicted (``models.cnn.age_gender_outputs``): one regression unit, or the
    expectation of a softmax over the ages 0..116 (``distribution``) whose variance is penalised
    with ``variance_weight`` (mean-variance loss; 0: off; ignored by ``regression``)."""

    kind: Literal["regression", "distribution"]
    variance_weight: NonNegativeFloat


# --- groups --------------------------------------------------------------------------------------


class Inference(_Group):
    """``inference``: how every node that predicts does it: the test-time views averaged per
    face (``age_gender.tta``): the mirror image (``flip_average``), centre-crop ``zooms`` in
    (1, 1.5], each once, and four shifts of ``shift`` x the side in [0, 0.25) (0: none)."""

    flip_average: bool
    zooms: list[Annotated[float, Field(gt=1.0, le=1.5)]]
    shift: Annotated[float, Field(ge=0, lt=0.25)]

    @model_validator(mode="after")
    def _zooms_once(self):
        _listed_once([str(z) for z in self.zooms], "zooms", "zoom")
        return self


class BootstrapSetting(_Group):
    """Percentile bootstrap intervals: resamples (0: no intervals, else >= 100), two-sided
    confidence level in (0, 1), seed of the numpy Generator."""

    resamples: Annotated[int, Field(ge=0)]
    confidence: OpenFraction
    seed: Seed

    @model_validator(mode="after")
    def _enough_resamples(self):
        if 0 < self.resamples < 100:
            raise ValueError(f"resamples must be 0 (no intervals) or >= 100, got {self.resamples}")
        return self


class Fairness(_Group):
    """The fairness report's age band edges (years, increasing, from 0; the last band is open)
    and the smallest group (faces) chosen as a worst or best group."""

    age_bands: Annotated[list[Annotated[int, Field(ge=0, le=120)]], Field(min_length=1)]
    min_count: Count

    @model_validator(mode="after")
    def _increasing_from_zero(self):
        if self.age_bands[0] != 0 or any(b <= a for a, b in zip(self.age_bands, self.age_bands[1:])):
            raise ValueError(f"age_bands must be increasing and start at 0, got {self.age_bands}")
        return self


def _listed_once(names: list[str], field: str, item: str) -> None:
    """Raise ValueError naming the entries of a list setting given more than once."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{field} lists {', '.join(twice)} more than once; list each {item} once")


#: Models the evaluation pipeline can judge (each has ``{name}_model`` and ``{name}_training_info``).
ModelName = Literal["scratch", "transfer", "distilled"]


class Evaluation(_Group):
    """``evaluation``: the models judged (in this order; paired differences for every pair), how
    the metrics state their uncertainty, and the fairness report's groups."""

    models: Annotated[list[ModelName], Field(min_length=1)]
    #: name -> member models: judged as one more model, the mean of the members' predictions
    #: (left out of a run that does not judge every member); null switches an entry off (an
    #: environment's parameters merge over conf/base's, so an empty mapping would keep them)
    ensembles: dict[str, Annotated[list[ModelName], Field(min_length=2)]]
    bootstrap: BootstrapSetting
    fairness: Fairness

    @model_validator(mode="before")
    @classmethod
    def _switched_off(cls, data: Any) -> Any:
        """An ensemble set to null is switched off (``ensembles: null``: all of them); the nodes
        skip them too (``reporting.active_ensembles``)."""
        if isinstance(data, Mapping) and "ensembles" in data:
            ensembles = data["ensembles"]
            if ensembles is None:
                return {**data, "ensembles": {}}
            if isinstance(ensembles, Mapping):
                return {**data, "ensembles": {k: v for k, v in ensembles.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _models_once(self):
        _listed_once(self.models, "models", "model")
        for name, members in self.ensembles.items():
            _listed_once(members, f"ensembles.{name}", "member")
            if not name.isidentifier():
                raise ValueError(f"ensembles: {name!r} is not a name of letters, digits and _; rename it")
            if name in get_args(ModelName) or name.startswith("study_"):
                raise ValueError(f"ensembles.{name}: the name is taken by a model; name the ensemble otherwise")
        return self


ExportFormat = Literal["saved_model", "tflite_float32", "tflite_int8", "onnx"]


class ExportTolerance(_Group):
    """The largest difference from the .keras model that passes: age (years), P(female)."""

    age_years: NonNegativeFloat
    female_prob: Annotated[float, Field(ge=0, le=1)]


class ExportCheck(_Group):
    max_faces: Count | None
    batch_size: Count
    tolerance: dict[Literal["float32", "int8"], ExportTolerance]

    @model_validator(mode="after")
    def _both_kinds(self):
        if set(self.tolerance) != {"float32", "int8"}:
            raise ValueError(f"tolerance needs float32 and int8, got {sorted(self.tolerance)}")
        return self


class ExportSpeed(_Group):
    faces: Count
    batch_size: Count
    repeats: Count


class Export(_Group):
    """``export``: the formats made of every trained model, how each is checked and timed."""

    formats: Annotated[list[ExportFormat], Field(min_length=1)]
    onnx_opset: Annotated[int, Field(ge=13, le=23)] | None
    check: ExportCheck
    speed: ExportSpeed


class Device(_Group):
    """``device``: dtype policy, XLA and deterministic kernels for every training node."""

    mixed_precision: MixedPrecision
    jit_compile: bool | Literal["auto"]
    deterministic: bool


class FaceCheck(_Group):
    """``ingestion.face_check``: which detector checks every crop (``haar`` or ``mtcnn``), whether
    its suspects are dropped, and Haar's strictness."""

    enabled: bool
    detector: Literal["haar", "mtcnn"]
    drop_suspects: bool
    min_neighbors: NonNegativeInt


class FaceDetector(_Group):
    """The face detector and its settings, shared by ``predict`` and ``ingestion.detect_faces``:
    smallest face looked for (px), Haar's neighbours, MTCNN's three confidences, the crop's margin
    (share of its side, > -0.5) and the longest side a photo is searched at (px)."""

    detector: Literal["mtcnn", "haar"]
    min_face: Annotated[int, Field(ge=12)]
    min_neighbors: NonNegativeInt
    thresholds: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(min_length=3, max_length=3)]
    margin: Annotated[float, Field(gt=-0.5, le=2)]
    detect_max_side: Annotated[int, Field(ge=64)]

    @model_validator(mode="after")
    def _faces_fit(self):
        if self.min_face > self.detect_max_side:
            raise ValueError(f"min_face ({self.min_face} px) must not exceed detect_max_side "
                             f"({self.detect_max_side} px): no face could ever be found")
        return self


class DetectFaces(FaceDetector):
    """``ingestion.detect_faces``: for datasets of whole photos (one face each), find the face and
    cut it as ``predict`` does before it enters the cache (off: images are taken as crops)."""

    enabled: bool


class Ingestion(_Group):
    """``ingestion``: cache sizes (px), decompression-bomb cap (pixels), smallest accepted image
    side (px), workers, exclusions, the face check of every crop, and face detection in whole
    photos (``detect_faces``)."""

    image_sizes: Annotated[list[ImageSize], Field(min_length=1)]
    max_pixels: Count
    min_side: Count
    workers: Count | None
    exclude_files: list[str]
    conflicting_duplicates: Literal["keep_first", "drop"]
    face_check: FaceCheck
    detect_faces: DetectFaces


class External(_Group):
    """``external``: what ``evaluate_external`` does with external images whose bytes are in the
    training data (``drop``: not scored; ``score_apart``: scored in a section of their own), and
    which datasets it evaluates on: ``datasets`` lists catalog entries (``FaceSourceDataset``), each
    scored by a namespaced pipeline ``external.<name>``; empty: the single entry ``external_raw``
    under ``external``."""

    overlap: Literal["drop", "score_apart"]
    datasets: list[CandidateName]

    @model_validator(mode="after")
    def _each_once(self):
        _listed_once(self.datasets, "datasets", "catalog entry")
        return self


class Predict(FaceDetector):
    """``predict``: model used on photos, the face detector and its settings (``FaceDetector``),
    the per-photo caps (pixels, megabytes) and photos per batch."""

    model: Literal["scratch", "transfer"]
    max_pixels: Count
    max_file_mb: Annotated[float, Field(gt=0, le=2000)]  # the catalog's photos_raw reads up to 2000 MB
    batch_size: Count


class SplitFractions(_Group):
    train: OpenFraction
    val1: OpenFraction
    val2: OpenFraction

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val1 + self.val2
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"train + val1 + val2 must sum to 1, got {total:g}")
        return self


class Split(_Group):
    """``split``: held-out test size (count or fraction), subset size (count or ``all``), the
    subset's cut, stratification bands (years, ``[edge_i, edge_i+1)``)."""

    seed: Seed
    test_size: Count | OpenFraction
    subset_size: Count | Literal["all"]
    fractions: SplitFractions
    age_band_edges: Annotated[list[NonNegativeFloat], Field(min_length=2)]

    @model_validator(mode="after")
    def _increasing_edges(self):
        edges = self.age_band_edges
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"age_band_edges must increase strictly, got {list(edges)}")
        return self


class ScratchTraining(_Group):
    """``scratch_training``: how the CNN from scratch trains (search candidates and final model).
    Sizes in px, rates per step, budget in minutes."""

    input_size: ImageSize
    width_multiplier: PositiveFloat
    pooling: Pooling
    batch_norm: bool
    l2: NonNegativeFloat
    dropout: Rate
    cross_stitch: CrossStitch
    batch_size: Count
    learning_rate: PositiveFloat
    lr_schedule: LrSchedule
    warmup_epochs: NonNegativeFloat
    loss_weights: LossWeights
    age_loss: AgeLoss
    age_head: AgeHead
    label_smoothing: Rate
    ema_momentum: Momentum | None
    epochs: Count
    patience: Count
    restore_best_weights: bool
    time_budget_minutes: PositiveFloat | None
    min_delta: NonNegativeFloat
    seed: Seed
    augmentation: Augmentation


def _partial(model: type[_Group], name: str, doc: str) -> type[_Group]:
    """``model`` with every key optional (absent = not overridden; ``null`` is still refused where
    the full model refuses it). Read the given keys with ``model_dump(exclude_unset=True)``."""
    fields = {key: (field.rebuild_annotation(), None) for key, field in model.model_fields.items()}
    partial = create_model(name, __base__=_Group, __doc__=doc, **fields)
    partial.__module__ = __name__
    return partial


ScratchTrainingOverrides = _partial(
    ScratchTraining, "ScratchTrainingOverrides",
    "Any subset of ``scratch_training``'s keys, each with its type and range; merged over it "
    "key by key (a nested mapping such as ``augmentation`` is replaced whole).")


class Architecture(_Group):
    """A CNN of the study's family: conv pairs (1-8), dense layers per branch, their units, and
    the number of shared conv pairs before the fork. Builder options may be added per entry; an
    absent option takes ``scratch_training``'s value."""

    conv_pairs: Annotated[int, Field(ge=1, le=8)]
    dense_layers: NonNegativeInt
    dense_units: Count
    split_point: NonNegativeInt
    # builder options, optional per entry (absent: the training's value; null refused)
    width_multiplier: PositiveFloat = None  # type: ignore[assignment]
    batch_norm: bool = None  # type: ignore[assignment]
    l2: NonNegativeFloat = None  # type: ignore[assignment]
    dropout: Rate = None  # type: ignore[assignment]
    cross_stitch: CrossStitch = None  # type: ignore[assignment]
    pooling: Pooling = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _split_inside(self):
        if self.split_point > self.conv_pairs:
            raise ValueError(f"split_point must be <= conv_pairs ({self.conv_pairs}), got {self.split_point}")
        return self


class Scratch(_Group):
    """``scratch``: the final CNN's architecture (or the search's winner) and its overrides."""

    use_search_winner: bool
    architecture: Architecture
    training: ScratchTrainingOverrides


class Distill(_Group):
    """``distill``: how many faces of the unused split the transfer model labels (an integer >= 1,
    or ``all``; a seeded random subset), the subset's seed, overrides of ``scratch_training`` for
    the student (after ``scratch.training``) and the gender targets (``soft``: the teacher's
    P(female); ``hard``: rounded to 0/1) and the test-time views the teacher labels with (an
    ``inference`` group; null: the shared ``inference``)."""

    unlabelled_faces: Count | Literal["all"]
    seed: Seed
    training: ScratchTrainingOverrides
    gender_targets: Literal["soft", "hard"]
    inference: Inference | None


class ScratchSearch(_Group):
    """``scratch_search``: the grid (candidate name -> architecture, run in this order), how many
    run (a count, ``all`` or null = all) and overrides of ``scratch_training`` for the search."""

    max_candidates: Count | Literal["all"] | None
    training: ScratchTrainingOverrides
    grid: Annotated[dict[CandidateName, Architecture], Field(min_length=1)]


class Head(_Group):
    structure: HeadStructure
    units: Count
    dropout: Rate
    learning_rate: PositiveFloat
    epochs: Count
    patience: Count
    batch_size: Count


class HeadSearch(_Group):
    structures: Annotated[list[HeadStructure], Field(min_length=1)]


class Hyperband(_Group):
    """keras-tuner Hyperband over the head's units and learning rate."""

    enabled: bool
    structure: HeadStructure | None
    units_min: Count
    units_max: Count
    units_step: Count
    lr_min: PositiveFloat
    lr_max: PositiveFloat
    max_epochs: Count
    factor: Annotated[int, Field(ge=2)]

    @model_validator(mode="after")
    def _bounds(self):
        if self.units_min > self.units_max:
            raise ValueError(f"units_min ({self.units_min}) must be <= units_max ({self.units_max})")
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min:g}) must be < lr_max ({self.lr_max:g})")
        return self


class FineTune(_Group):
    unfreeze_last: NonNegativeInt
    learning_rate: PositiveFloat
    lr_schedule: LrSchedule
    warmup_epochs: NonNegativeFloat
    label_smoothing: Rate
    ema_momentum: Momentum | None
    epochs: Count
    patience: Count
    restore_best_weights: bool
    time_budget_minutes: PositiveFloat | None
    min_delta: NonNegativeFloat
    batch_size: Count


class Transfer(_Group):
    """``transfer``: backbones compared and the final one, their weights (``imagenet``,
    ``random`` or a local no-top ``.weights.h5`` file), the head, its search and fine-tuning."""

    backbone: BackboneName
    compare: list[BackboneName]
    input_size: ImageSize
    seed: Seed
    backbone_weights: dict[BackboneName, Annotated[str, Field(min_length=1)]]
    allow_random_init: bool
    loss_weights: LossWeights
    age_loss: AgeLoss
    age_head: AgeHead
    head: Head
    head_search: HeadSearch
    hyperband: Hyperband
    fine_tune: FineTune
    augmentation: Augmentation

    @model_validator(mode="after")
    def _backbones_usable(self):
        used = list(dict.fromkeys([*self.compare, self.backbone]))
        small = [n for n in used if self.input_size < BACKBONE_MIN_SIZE[n]]
        if small:
            raise ValueError(f"input_size {self.input_size} is below what {', '.join(small)} accept "
                             f"(>= {max(BACKBONE_MIN_SIZE[n] for n in small)} px)")
        if not self.allow_random_init:
            for name in used:
                weights = self.backbone_weights.get(name, "imagenet")
                if weights not in ("imagenet", "random", "none") and not Path(weights).is_file():
                    raise ValueError(
                        f"backbone_weights.{name} names no file: '{weights}'; point it (or "
                        f"UTKFACE_WEIGHTS_DIR) at the no-top .weights.h5 file, or use imagenet")
        return self


GROUPS: dict[str, type[_Group]] = {
    "inference": Inference, "evaluation": Evaluation, "device": Device, "ingestion": Ingestion, "predict": Predict,
    "split": Split, "scratch_training": ScratchTraining, "scratch": Scratch,
    "scratch_search": ScratchSearch, "transfer": Transfer, "external": External, "export": Export,
    "distill": Distill,
}
# Top-level keys that are not groups: raw-input paths the catalog reads from runtime parameters
# (`--params external_faces=...`, `--params photos=...`).
RUNTIME_KEYS: dict[str, Any] = {"external_faces": str, "photos": str}


# --- messages ------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(metadata: Iterable[Any]) -> tuple[list[str], list[str]]:
    """(range phrases such as ">= 1", other phrases such as "with at least 2 items")."""
    ranges: list[str] = []
    other: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            inner_ranges, inner_other = _bounds(item.metadata)
            ranges.extend(inner_ranges)
            other.extend(inner_other)
            continue
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                ranges.append(f"{sign} {_number(value)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            other.append(f"with at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
        if getattr(item, "pattern", None):
            other.append("made of letters, digits and _ (starting with a letter)")
    return list(dict.fromkeys(ranges)), list(dict.fromkeys(other))


def describe(annotation: Any) -> str:
    """What an annotation allows, in words: ``an integer >= 1``, ``one of 'a', 'b'`` ..."""
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata.extend(extra)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(describe(a) for a in options)
        return text + (" or null" if len(options) < len(get_args(annotation)) else "")
    ranges, other = _bounds(metadata)
    bounds = "".join(f" {text}" for text in [" and ".join(ranges), *other] if text)
    if origin is Literal:
        choices = get_args(annotation)
        if len(choices) == 1:
            return _show(choices[0])
        return "one of " + ", ".join(_show(c) for c in choices)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer" + bounds
    if annotation is float:
        return "a number" + bounds
    if annotation is str:
        return "a string" + bounds
    if origin is list:
        item = describe(get_args(annotation)[0])
        item = item[len("one of "):] if item.startswith("one of ") else _plural(item)
        return "a list" + bounds + " of " + item
    if origin is dict:
        key, value = get_args(annotation)
        return "a mapping" + bounds + " of " + _plural(describe(key)) + " to " + _plural(describe(value))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping with keys " + ", ".join(annotation.model_fields)
    return getattr(annotation, "__name__", str(annotation))


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            head, _, rest = text[len(article):].partition(" ")
            return f"{head}s {rest}".strip() if not head.endswith("s") else text[len(article):]
    return text


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], Any, type[BaseModel] | None]:
    """Follow a pydantic error location through ``model``: the key path (union-member tags
    dropped), the annotation at its end and the last model passed (for key suggestions)."""
    path: list[str] = []
    annotation: Any = model
    last_model: type[BaseModel] | None = model
    for part in loc:
        bare = annotation
        while get_origin(bare) is Annotated:
            bare = get_args(bare)[0]
        if get_origin(bare) in (Union, types.UnionType):
            options = [a for a in get_args(bare) if a is not type(None)]
            models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
            containers = [a for a in options if get_origin(_strip(a)) in (dict, list)]
            if len(options) == 1:
                bare = options[0]
            elif models and isinstance(part, str) and part in models[0].model_fields:
                bare = models[0]
            elif containers:
                bare = _strip(containers[0])
            else:
                continue  # a union member's tag
        if isinstance(bare, type) and issubclass(bare, BaseModel):
            last_model = bare
            if part in bare.model_fields:
                path.append(str(part))
                annotation = bare.model_fields[part].rebuild_annotation()
                continue
            path.append(str(part))  # an unknown key (extra_forbidden)
            annotation = Any
            continue
        if get_origin(bare) is dict and not isinstance(part, int):
            path.append(str(part))
            annotation = get_args(bare)[1]
            continue
        if get_origin(bare) is list and isinstance(part, int):
            path[-1:] = [f"{path[-1]}[{part}]"] if path else [f"[{part}]"]
            annotation = get_args(bare)[0]
            continue
        # a tag of a union member or a validator step: not a key
    return path, annotation, last_model


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _messages(group: str, model: type[BaseModel], error: ValidationError) -> list[str]:
    messages: dict[str, str] = {}
    suggested: set[str] = set()
    for item in error.errors():
        path, annotation, owner = _walk(model, tuple(item["loc"]))
        name = ".".join([group, *path])
        kind = item["type"]
        if kind == "extra_forbidden":
            known = list(owner.model_fields) if owner is not None else []
            close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6) if path else []
            parent = name.rsplit(".", 1)[0]
            if close:
                suggested.add(f"{parent}.{close[0]}")
                messages[name] = f"{name} is not a parameter; did you mean {parent}.{close[0]}?"
            else:
                messages[name] = f"{name} is not a parameter; {parent} takes {', '.join(known)}"
        elif kind == "missing":
            messages[name] = f"{name} is missing; it must be {describe(annotation)}"
        elif kind == "value_error":
            cause = item.get("ctx", {}).get("error")
            messages[name] = f"{name}: {cause if cause is not None else item['msg']}"
        elif name not in messages:
            messages[name] = f"{name} must be {describe(annotation)}, got {_show(item['input'])}"
    # a misspelt key also makes the right key missing: say it once, as the misspelling
    return [text for name, text in messages.items() if name not in suggested]


# --- validation ----------------------------------------------------------------------------------


def validate_group(group: str, value: Any) -> _Group:
    """Validate one top-level group (``group`` in :data:`GROUPS`) and return its model.

    Raises:
        ParameterError: one line naming every wrong key or value of the group.
    """
    return GROUPS[group].model_validate(value)


def _merged_training(name: str, overrides: Any, base: ScratchTraining) -> None:
    given = overrides.model_dump(exclude_unset=True)
    merged = {**base.model_dump(), **given}
    try:
        ScratchTraining.model_validate(merged)
    except ParameterError as error:
        raise ParameterError(f"{name} merged over scratch_training: {error}") from None


def _too_deep(where: str, architectures: Mapping[str, Architecture], input_size: int) -> list[str]:
    """Architectures whose poolings shrink ``input_size`` below 1 px, grouped by depth."""
    by_depth: dict[int, list[str]] = {}
    for name, architecture in architectures.items():
        if input_size < 2 ** architecture.conv_pairs:
            by_depth.setdefault(architecture.conv_pairs, []).append(name)
    return [f"{where}{', '.join(names)} ha{'s' if len(names) == 1 else 've'} {depth} conv pairs, which need "
            f"an input_size >= {2 ** depth} px, got {input_size}" for depth, names in sorted(by_depth.items())]


def validate_parameters(params: Mapping[str, Any], groups: Iterable[str] | None = None) -> dict[str, _Group]:
    """Validate ``params`` (Kedro's merged parameters, runtime ``--params`` included).

    Checks every top-level key (unknown ones are refused with the nearest known name), each group
    in ``groups`` (all present groups when ``None``) and, where both are present, the merged
    ``scratch_training`` + ``scratch.training`` / ``scratch_search.training`` and that every
    architecture fits the input size it trains at.

    Returns:
        group name -> validated model, for the groups checked.
    Raises:
        ParameterError: one line listing every problem found (``"; "``-separated).
    """
    problems: list[str] = []
    known = [*GROUPS, *RUNTIME_KEYS]
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            problems.append(f"{key} is not a parameter; did you mean {close[0]}?" if close else
                            f"{key} is not a parameter; known: {', '.join(known)}")
        elif key in RUNTIME_KEYS and not isinstance(params[key], str):
            problems.append(f"{key} must be a path (a string), got {_show(params[key])}")
    wanted = list(GROUPS) if groups is None else [g for g in dict.fromkeys(groups) if g in GROUPS]
    checked: dict[str, _Group] = {}
    for group in wanted:
        if group not in params:
            if groups is not None:
                problems.append(f"{group} is missing; it must be {describe(GROUPS[group])}")
            continue
        try:
            checked[group] = validate_group(group, params[group])
        except ParameterError as error:
            problems.append(str(error))
    base = checked.get("scratch_training")
    if base is None and "scratch_training" in params and ({"scratch", "scratch_search", "distill"} & set(checked)):
        try:
            base = validate_group("scratch_training", params["scratch_training"])
        except ParameterError as error:
            problems.append(str(error))
    if base is not None:
        for name in ("scratch", "scratch_search", "distill"):
            if name in checked:
                try:
                    _merged_training(f"{name}.training", checked[name].training, base)
                except ParameterError as error:
                    problems.append(str(error))
                if name == "distill":
                    continue
                size = checked[name].training.model_dump(exclude_unset=True).get("input_size",
                                                                                  base.input_size)
                if name == "scratch":
                    problems.extend(_too_deep("", {"scratch.architecture": checked[name].architecture}, size))
                else:
                    problems.extend(_too_deep("scratch_search.grid: ", checked[name].grid, size))
    if problems:
        raise ParameterError("; ".join(dict.fromkeys(problems)))
    return checked


def groups_read_by(pipeline: Any) -> list[str]:
    """Top-level parameter groups that any node of ``pipeline`` reads (``params:a.b`` reads ``a``),
    and ``scratch_training`` with ``scratch`` / ``scratch_search`` (their overrides merge over it)."""
    groups: list[str] = []
    for node in pipeline.nodes:
        for name in node.inputs:
            if name.startswith("params:"):
                groups.append(name[len("params:"):].split(".", 1)[0])
            elif name == "parameters":
                groups.extend(GROUPS)
    if {"scratch", "scratch_search", "distill"} & set(groups):
        groups.append("scratch_training")
    return list(dict.fromkeys(groups))
