"""Labels of a face dataset from something other than UTKFace file names.

A ``FaceSourceDataset`` catalog entry may carry a ``labels:`` block (and a ``split_lists:``
block); this module turns it, plus the member names of the images, into one label (or one
reason for refusing) per image. Three label forms:

* ``utkface_names`` (the default): ``[age]_[gender]_[race]_[datetime].jpg[.chip.jpg]``;
* a label **table** (CSV, parquet, ... read by any kedro-datasets pandas dataset) with a column
  mapping (``file``, ``age``, ``gender``, optional ``race``, optional ``split``) and value maps;
* a folder **layout** pattern such as ``{age}/{gender}/{name}`` with value maps for the codes.

Ages are whole years (``25``) or inclusive ranges (``20-29``, or a value map entry such as
``"more than 70": "70-116"``); a range is kept as ``age_low``/``age_high`` and its point label
(used only where a single number is needed: training, stratification) is the midpoint rounded
down, ``(age_low + age_high) // 2``. Genders are 0 = male, 1 = female; race codes are UTKFace's
0-4, or -1 when the dataset gives none. Nothing is guessed: a missing value is
``missing_label``, a value the maps do not cover is ``unmapped_label``, an age over
``MAX_AGE`` is ``implausible_age``.

Malformed tables (a missing column, a file listed twice, a path that leaves the image folder, a
file in two split lists) raise ``LabelTableError``: one line naming the table, the row and the fix.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from age_gender.faces import MAX_AGE, LabelRefusal, parse_utkface_name

#: Values a split label may take after mapping. ``val`` is cut into val1/val2 by ``split``.
GIVEN_SPLITS = ("train", "val", "test", "unused")
FIELDS = ("age", "gender", "race", "split")
_RANGE = re.compile(r"\s*([0-9]+)\s*(?:-|–|to)\s*([0-9]+)\s*\Z", re.ASCII)
_WHOLE = re.compile(r"\s*([0-9]+)(?:\.0*)?\s*\Z", re.ASCII)


class LabelTableError(ValueError):
    """A label source that cannot be read as described: one line, cause and fix."""


@dataclass(frozen=True)
class Label:
    """One image's labels. Ages in whole years, ``age_low <= age_high`` (inclusive); ``gender``
    0 = male, 1 = female; ``race`` 0-4 (UTKFace codes) or -1 unknown; ``split`` one of
    ``GIVEN_SPLITS`` or ``""`` (no predefined split); ``timestamp`` only for UTKFace names."""

    age_low: int
    age_high: int
    gender: int
    race: int = -1
    split: str = ""
    timestamp: str = ""

    @property
    def age(self) -> int:
        """The point label: the age, or a range's midpoint rounded down (years)."""
        return (self.age_low + self.age_high) // 2

    @property
    def is_range(self) -> bool:
        return self.age_high != self.age_low


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()) or str(value) in ("nan", "NaN", "<NA>", "None")


def _key(value: Any) -> str:
    """A cell as the text a value map is keyed by (``1.0`` read by pandas is ``1``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def normalise_path(text: Any) -> str | None:
    """A listed file as a relative POSIX path, or None when it leaves the image folder
    (absolute, a drive letter, ``..``, a NUL byte)."""
    name = str(text).strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    if not name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    if ".." in PurePosixPath(name).parts:
        return None
    return name


@dataclass
class ValueMaps:
    """Per field, the dataset's value (as text) -> the project's value. For gender, race and split
    the map is the whole set of accepted values (a field without a map accepts the project's own
    codes only: gender 0/1, race 0-4, split names); for age it only rewrites the values it lists,
    every other value must read as whole years or a ``low-high`` range by itself."""

    maps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, where: str) -> ValueMaps:
        values = dict(values or {})
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise LabelTableError(f"{where}: values has unknown field(s) {unknown}; expected some of {list(FIELDS)}")
        maps = {}
        for name, mapping in values.items():
            if not isinstance(mapping, Mapping):
                raise LabelTableError(f"{where}: values.{name} must map dataset values to labels, got {mapping!r}")
            maps[name] = {_key(k): v for k, v in mapping.items()}
            wrong = [v for v in maps[name].values() if not _valid_target(name, v)]
            if wrong:
                raise LabelTableError(f"{where}: values.{name} maps to {wrong[0]!r}, which is not {_TARGETS[name]}")
        return cls(maps)

    def _mapped(self, name: str, value: Any) -> Any:
        mapping = self.maps.get(name)
        if mapping is None:
            return value
        return mapping.get(_key(value), _UNMAPPED)

    def age(self, value: Any) -> tuple[int, int] | LabelRefusal:
        if _missing(value):
            return LabelRefusal("no age given", "missing_label")
        # values.age only rewrites the values it lists ("more than 70": "70-116"); any other
        # value must read as whole years or a range by itself
        text = _key(self.maps.get("age", {}).get(_key(value), value))
        whole, span = _WHOLE.fullmatch(text), _RANGE.fullmatch(text)
        if (whole or span) and max(len(g.lstrip("0")) for g in (whole or span).groups()) > 3:
            return LabelRefusal(f"age {text[:30]!r} is above {MAX_AGE}", "implausible_age")
        if whole:
            low = high = int(whole.group(1))
        elif span:
            low, high = int(span.group(1)), int(span.group(2))
            if low > high:
                return LabelRefusal(f"age range {text[:30]!r} runs backwards", "unmapped_label")
        else:
            return LabelRefusal(f"age {text[:30]!r} is neither whole years nor a 'low-high' range "
                                f"(map it in values.age)", "unmapped_label")
        if high > MAX_AGE:
            return LabelRefusal(f"age {text[:30]!r} is above {MAX_AGE}", "implausible_age")
        return low, high

    def code(self, name: str, value: Any, allowed: Iterable[int]) -> int | LabelRefusal:
        if _missing(value):
            return LabelRefusal(f"no {name} given", "missing_label")
        mapped = self._mapped(name, value)
        allowed = tuple(allowed)
        text = _key(mapped)
        if mapped is _UNMAPPED or text not in {str(a) for a in allowed}:
            hint = f"values.{name}" if name in self.maps else f"the codes {list(allowed)} (or add values.{name})"
            return LabelRefusal(f"{name} {_key(value)[:30]!r} is not in {hint}", "unmapped_label")
        return int(text)

    def split(self, value: Any) -> str | LabelRefusal:
        if _missing(value):
            return "unused"
        mapped = self._mapped("split", value)
        text = "" if mapped is _UNMAPPED else _key(mapped)
        if text not in GIVEN_SPLITS:
            return LabelRefusal(f"split {_key(value)[:30]!r} is not one of {list(GIVEN_SPLITS)}"
                                f"{' after values.split' if 'split' in self.maps else ' (add values.split)'}",
                                "unmapped_label")
        return text


_UNMAPPED = object()
_TARGETS = {"gender": "0 (male) or 1 (female)", "race": "a UTKFace race code 0-4 (or -1: unknown)",
            "split": f"one of {list(GIVEN_SPLITS)}", "age": "whole years or a 'low-high' range"}


def _valid_target(name: str, value: Any) -> bool:
    """Whether a value map's target is a label the project knows (checked when the entry is read)."""
    text = _key(value)
    if name == "gender":
        return text in ("0", "1")
    if name == "race":
        return text in ("-1", "0", "1", "2", "3", "4")
    if name == "split":
        return text in GIVEN_SPLITS
    return bool(_WHOLE.fullmatch(text) or _RANGE.fullmatch(text))


def _label(maps: ValueMaps, age: Any, gender: Any, race: Any = None, has_race: bool = False,
           split: Any = None, has_split: bool = False) -> Label | LabelRefusal:
    ages = maps.age(age)
    if isinstance(ages, LabelRefusal):
        return ages
    code = maps.code("gender", gender, (0, 1))
    if isinstance(code, LabelRefusal):
        return code
    race_code = -1
    if has_race and not _missing(race):  # race is optional: an empty cell is "unknown"
        race_code = maps.code("race", race, (-1, 0, 1, 2, 3, 4))
        if isinstance(race_code, LabelRefusal):
            return race_code
    given = ""
    if has_split:
        given = maps.split(split)
        if isinstance(given, LabelRefusal):
            return given
    return Label(ages[0], ages[1], code, race_code, given)


class MemberIndex:
    """Finds the image a listed path names: the member whose path equals it or ends with
    ``/`` + it (so ``train/1.jpg`` finds ``fairface/train/1.jpg`` and a bare file name finds
    ``UTKFace/<name>``). A path that fits several members names none of them."""

    def __init__(self, members: Iterable[str]) -> None:
        self._by_tail: dict[str, list[str]] = defaultdict(list)
        for member in members:
            parts = member.split("/")
            for k in range(len(parts)):
                self._by_tail["/".join(parts[k:])].append(member)

    def find(self, path: str) -> list[str]:
        return self._by_tail.get(path, [])


def _read_table(config: Any, where: str, what: str):
    """A pandas DataFrame from a kedro-datasets entry (a dict with ``type`` and ``filepath``)."""
    from kedro.io import AbstractDataset

    if not isinstance(config, Mapping) or "type" not in config:
        raise LabelTableError(f"{where}: {what} must be a dataset entry such as "
                              f"{{type: pandas.CSVDataset, filepath: labels.csv}}, got {config!r}")
    try:
        frame = AbstractDataset.from_config(what, dict(config)).load()
    except Exception as error:  # pandas/fsspec raise many types; one line names the table
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise LabelTableError(f"{where}: cannot read {what} {config.get('filepath', '')!r} "
                              f"({type(error).__name__}: {detail[:200]}); check its path and type") from None
    if not hasattr(frame, "columns"):
        raise LabelTableError(f"{where}: {what} did not load as a table (got {type(frame).__name__}); "
                              f"use a pandas dataset such as pandas.CSVDataset or pandas.ParquetDataset")
    return frame


@dataclass
class Labelled:
    """What a label source says about every member: ``labels`` (member -> ``Label`` or
    ``LabelRefusal``) and a ``report`` (JSON-ready) for the ingestion report."""

    labels: dict[str, Label | LabelRefusal]
    report: dict[str, Any]


def _listed_once(raw: Any, number: int, seen: dict[str, int], what: str) -> str:
    """The normalised path a table row (1-based ``number``, header = row 1) names, recorded in
    ``seen``; raises ``LabelTableError`` for a path that leaves the image folder or a file listed twice."""
    path = normalise_path(raw)
    if path is None:
        raise LabelTableError(f"{what} row {number} names {str(raw)[:80]!r}, a path that leaves the image "
                              f"folder; list files relative to it")
    if path in seen:
        raise LabelTableError(f"{what} lists {path!r} twice (rows {seen[path]} and {number}); keep one row per file")
    seen[path] = number
    return path


def _column(columns: Mapping[str, Any], name: str) -> str | None:
    value = columns.get(name)
    return None if value is None else str(value)


def read_label_table(config: Mapping[str, Any], where: str) -> tuple[dict[str, Label | LabelRefusal], dict[str, Any]]:
    """Rows of a label table, checked: ``config`` has ``table`` (a dataset entry), ``columns``
    (field -> column name; ``file``, ``age``, ``gender`` required) and optional ``values`` maps.
    Returns listed path -> label (or why the row gives none) and the report's description."""
    columns = {"file": "file", "age": "age", "gender": "gender", **dict(config.get("columns") or {})}
    unknown = sorted(set(columns) - {"file", *FIELDS})
    if unknown:
        raise LabelTableError(f"{where}: labels.columns has unknown field(s) {unknown}; expected file, "
                              f"age, gender, race, split")
    maps = ValueMaps.from_config(config.get("values"), where)
    frame = _read_table(config.get("table"), where, "labels.table")
    have = [str(c) for c in frame.columns]
    for name in ("file", "age", "gender", "race", "split"):
        column = _column(columns, name)
        if column is not None and column not in have:
            raise LabelTableError(f"{where}: label table has no column {column!r} (labels.columns.{name}); "
                                  f"its columns are {have[:20]}; set labels.columns.{name} to one of them")
    has_race, has_split = _column(columns, "race") is not None, _column(columns, "split") is not None
    seen: dict[str, int] = {}
    rows: dict[str, Label | LabelRefusal] = {}
    for number, record in enumerate(frame.to_dict("records"), start=2):  # row 1 is the header
        raw = record[columns["file"]]
        if _missing(raw):
            raise LabelTableError(f"{where}: label table row {number} has no file name; fill it in or delete the row")
        path = _listed_once(raw, number, seen, f"{where}: label table")
        rows[path] = _label(maps, record[columns["age"]], record[columns["gender"]],
                            record.get(_column(columns, "race")), has_race,
                            record.get(_column(columns, "split")), has_split)
    return rows, {"form": "table", "table": str(config["table"].get("filepath", "")), "rows": len(frame),
                  "columns": {k: v for k, v in columns.items() if v is not None}}


def _attach(rows: Mapping[str, Label | LabelRefusal], members: list[str], kind: str,
            why: str) -> Labelled:
    """Give each member the label of the one row that names it."""
    index = MemberIndex(members)
    claimed: dict[str, list[str]] = defaultdict(list)
    without_image = []
    for path in rows:
        found = index.find(path)
        if not found:
            without_image.append(path)
        elif len(found) > 1:
            for member in found:
                claimed[member].append(f"{path} (fits {len(found)} files)")
        else:
            claimed[found[0]].append(path)
    labels: dict[str, Label | LabelRefusal] = {}
    for member in members:
        paths = claimed.get(member, [])
        if not paths:
            labels[member] = LabelRefusal(why, kind)
        elif len(paths) > 1 or "(fits" in paths[0]:
            labels[member] = LabelRefusal(f"listed as {', '.join(paths)[:200]}: which row is its label "
                                          f"cannot be known", "ambiguous_label_row")
        else:
            labels[member] = rows[paths[0]]
    report = {"rows_without_image": len(without_image),
              "rows_without_image_examples": sorted(without_image)[:50]}
    return Labelled(labels, report)


def _layout_regex(pattern: str, where: str) -> re.Pattern:
    pieces = re.split(r"(\{[a-z_]+\})", pattern.strip().strip("/"))
    fields = [p[1:-1] for p in pieces if p.startswith("{")]
    allowed = {"age", "gender", "race", "split", "name", "any"}
    if "name" not in fields or "age" not in fields or "gender" not in fields or set(fields) - allowed:
        raise LabelTableError(f"{where}: labels.layout {pattern!r} must use {{age}}, {{gender}} and {{name}} "
                              f"(optionally {{race}}, {{split}}, {{any}}), e.g. '{{age}}/{{gender}}/{{name}}'")
    if len([f for f in fields if f != "any"]) != len({f for f in fields if f != "any"}):
        raise LabelTableError(f"{where}: labels.layout {pattern!r} uses a field twice")
    regex = "".join(
        (f"(?P<{p[1:-1]}>[^/]+)" if p[1:-1] != "any" else "[^/]+") if p.startswith("{") else re.escape(p)
        for p in pieces)
    return re.compile(rf"(?:^|.*/){regex}\Z", re.DOTALL)


def label_layout(config: Mapping[str, Any], members: list[str], where: str) -> Labelled:
    """Labels from each member's path: ``config['layout']`` such as ``{age}/{gender}/{name}``
    (matched against the end of the path), with optional ``values`` maps."""
    regex = _layout_regex(str(config["layout"]), where)
    maps = ValueMaps.from_config(config.get("values"), where)
    labels: dict[str, Label | LabelRefusal] = {}
    for member in members:
        match = regex.fullmatch(member)
        if match is None:
            labels[member] = LabelRefusal(f"path does not fit labels.layout {config['layout']!r}", "malformed_name")
            continue
        parts = match.groupdict()
        labels[member] = _label(maps, parts["age"], parts["gender"], parts.get("race"), "race" in parts,
                                parts.get("split"), "split" in parts)
    return Labelled(labels, {"form": "layout", "layout": str(config["layout"])})


def label_names(members: list[str]) -> Labelled:
    """UTKFace's own labels from each file name (``faces.parse_utkface_name``)."""
    labels: dict[str, Label | LabelRefusal] = {}
    for member in members:
        parsed = parse_utkface_name(member)
        labels[member] = parsed if isinstance(parsed, LabelRefusal) else Label(
            parsed.age, parsed.age, parsed.gender, parsed.race, "", parsed.timestamp)
    return Labelled(labels, {"form": "utkface_names"})


def read_split_lists(lists: Mapping[str, Any], where: str) -> dict[str, list[str]]:
    """Predefined split lists: ``lists`` maps ``train``/``test`` (and optionally ``val``) to a
    dataset entry of a table whose first column lists files (or ``{dataset: ..., column: name}``).
    Returns split -> listed paths, checked (no path leaving the image folder, none listed twice)."""
    if not isinstance(lists, Mapping):
        raise LabelTableError(f"{where}: split_lists must map train/test to list datasets, got {lists!r}")
    unknown = sorted(set(lists) - {"train", "val", "test"})
    if unknown or "train" not in lists or "test" not in lists:
        raise LabelTableError(f"{where}: split_lists needs a 'train' and a 'test' list (and may have 'val'); "
                              f"got {sorted(lists)}")
    result: dict[str, list[str]] = {}
    for split, entry in lists.items():
        column = None
        if isinstance(entry, Mapping) and "dataset" in entry:
            column, entry = entry.get("column"), entry["dataset"]
        frame = _read_table(entry, where, f"split_lists.{split}")
        if column is None:
            column = str(frame.columns[0]) if len(frame.columns) else None
        if column not in [str(c) for c in frame.columns]:
            raise LabelTableError(f"{where}: split_lists.{split} has no column {column!r}; its columns are "
                                  f"{[str(c) for c in frame.columns][:20]}; set split_lists.{split}.column")
        listed: dict[str, int] = {}
        for number, raw in enumerate(frame[column].tolist(), start=2):
            if _missing(raw):
                continue
            _listed_once(raw, number, listed, f"{where}: split_lists.{split}")
        for other, paths in result.items():
            both = sorted(set(paths) & set(listed))
            if both:
                raise LabelTableError(f"{where}: {both[0]!r} is in split_lists.{other} and split_lists.{split} "
                                      f"({len(both)} such files); a file belongs to one split")
        result[split] = list(listed)
    return result


def apply_split_lists(labelled: Labelled, lists: Mapping[str, list[str]], members: list[str], where: str) -> None:
    """Every member named by one list gets that split, every other one ``unused``; the report
    says per list how many files it names, how many were found among the images, which are
    missing. Raises ``LabelTableError`` for a file in two lists."""
    index = MemberIndex(members)
    given: dict[str, str] = {}
    summary = {}
    for split, listed in lists.items():
        missing, found = [], 0
        for path in listed:
            hits = index.find(path)
            if len(hits) != 1:
                missing.append(path if not hits else f"{path} (fits {len(hits)} files)")
                continue
            member = hits[0]
            if member in given:
                raise LabelTableError(f"{where}: {path!r} is in split_lists.{given[member]} and "
                                      f"split_lists.{split}; a file belongs to one split")
            given[member] = split
            found += 1
        summary[split] = {"listed": len(listed), "found": found, "missing": len(missing),
                          "missing_examples": sorted(missing)[:50]}
    for member, label in labelled.labels.items():
        if isinstance(label, Label):
            labelled.labels[member] = Label(label.age_low, label.age_high, label.gender, label.race,
                                            given.get(member, "unused"), label.timestamp)
    labelled.report["split_lists"] = summary


class LabelSpec:
    """A catalog entry's ``labels`` and ``split_lists`` blocks, checked and their tables read
    when built (before any image is read), applied to the member names by :meth:`apply`.
    ``labels`` None: UTKFace names. Raises ``LabelTableError`` for a malformed source."""

    def __init__(self, labels: Mapping[str, Any] | None, split_lists: Mapping[str, Any] | None,
                 where: str) -> None:
        self.where = where
        self.config = check_label_config(labels, where)
        self.rows: dict[str, Label | LabelRefusal] | None = None
        self.report: dict[str, Any] = {}
        if "table" in self.config:
            self.rows, self.report = read_label_table(self.config, where)
            if split_lists and any(isinstance(v, Label) and v.split for v in self.rows.values()):
                raise LabelTableError(f"{where}: both a split column and split_lists are given; keep one")
        elif "layout" in self.config:
            _layout_regex(str(self.config["layout"]), where)
            ValueMaps.from_config(self.config.get("values"), where)
        self.lists = read_split_lists(split_lists, where) if split_lists else None

    def apply(self, members: list[str]) -> Labelled:
        if self.rows is not None:
            labelled = _attach(self.rows, members, "no_label_row", "the label table has no row for it")
            labelled.report.update(self.report)
        elif "layout" in self.config:
            labelled = label_layout(self.config, members, self.where)
        else:
            labelled = label_names(members)
        if self.lists is not None:
            apply_split_lists(labelled, self.lists, members, self.where)
        ranges = sum(1 for v in labelled.labels.values() if isinstance(v, Label) and v.is_range)
        labelled.report["age_ranges"] = ranges
        if ranges:
            labelled.report["age_point_label"] = "midpoint rounded down, (age_low + age_high) // 2"
        return labelled


def check_label_config(labels: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """The ``labels`` block, its keys checked (one form: table or layout or UTKFace names)."""
    if labels is not None and not isinstance(labels, Mapping):
        raise LabelTableError(f"{where}: labels must be a mapping (table/columns/values or layout/values), "
                              f"got {labels!r}")
    config = dict(labels or {})
    forms = [k for k in ("table", "layout") if k in config]
    if len(forms) > 1:
        raise LabelTableError(f"{where}: labels has both 'table' and 'layout'; give one")
    allowed = {"table": {"table", "columns", "values"}, "layout": {"layout", "values"}}.get(
        forms[0] if forms else "", {"from"})
    extra = sorted(set(config) - allowed - {"from"})
    if extra:
        raise LabelTableError(f"{where}: labels has unknown key(s) {extra}; a table takes table, columns, "
                              f"values; a layout takes layout, values")
    if config.get("from", "utkface_names") != "utkface_names":
        raise LabelTableError(f"{where}: labels.from must be 'utkface_names' (or give labels.table / labels.layout)")
    ValueMaps.from_config(config.get("values"), where)
    if "layout" in config:
        _layout_regex(str(config["layout"]), where)
    return config


def check_split_lists_config(lists: Mapping[str, Any] | None, where: str) -> None:
    """The ``split_lists`` block's shape: a ``train`` and a ``test`` list (and maybe ``val``)."""
    if lists is None:
        return
    if not isinstance(lists, Mapping) or "train" not in lists or "test" not in lists or \
            set(lists) - {"train", "val", "test"}:
        raise LabelTableError(f"{where}: split_lists needs a 'train' and a 'test' list (and may have 'val'), "
                              f"each a dataset entry such as {{type: pandas.CSVDataset, filepath: train.csv}}; "
                              f"got {lists!r}"[:300])
