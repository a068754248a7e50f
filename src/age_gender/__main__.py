"""The ``age-gender`` console command (also ``python -m age_gender``).

``age-gender predict PHOTO_OR_FOLDER... --model MODEL.keras [--output faces.csv]`` predicts age
and gender for every face in the photos, with no Kedro project folder; any other arguments go to
Kedro's ``run`` command of this project (``age-gender --pipeline split`` = ``kedro run --pipeline
split``, in the project folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from age_gender.datasets import IMAGE_SUFFIXES
from age_gender.tta import DEFAULT_ZOOMS, Views, zoom_factors


def _photo_paths(paths: list[str]) -> list[Path]:
    """The files given, and the image files (by suffix) anywhere under the folders given, sorted.

    Raises:
        ValueError: a path that does not exist or is a FIFO/socket/device, or no image at all.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            found.append(path)
        elif path.exists():  # a FIFO, socket or device: never opened (a FIFO would block)
            raise ValueError(f"'{path}' is not a regular file or folder (a FIFO, socket or device): give photos "
                             f"or folders of photos")
        else:
            raise ValueError(f"no file or folder at '{path}': give photos or folders of photos")
    if not found:
        raise ValueError(f"no image file ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(paths)}")
    return found


def predict_command(argv: list[str]) -> int:
    """``age-gender predict``: a CSV of one row per face (stdout, or ``--output``, written
    atomically); unreadable photos are listed on stderr, one line each. Exit status 0, or 1 when
    a setting or input is refused (one line on stderr: ``ERROR: ...``) or a photo is unreadable."""
    from age_gender.detection import DETECTORS

    parser = argparse.ArgumentParser(prog="age-gender predict",
                                     description="Age and gender of every face in photos.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos, or folders searched for photos")
    parser.add_argument("--model", required=True, help="a trained .keras model of this project")
    parser.add_argument("--output", help="CSV file to write (default: print the table)")
    parser.add_argument("--detector", choices=DETECTORS, default="mtcnn", help="face detector (default mtcnn)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="extra share of the crop side on each side of UTKFace's framing (default 0)")
    parser.add_argument("--min-face", type=int, default=40, help="smallest face side, px (default 40)")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per batch (default 32)")
    parser.add_argument("--no-flip-average", action="store_true", help="do not average with the mirror image")
    parser.add_argument("--zooms", default=",".join(str(z) for z in DEFAULT_ZOOMS),
                        help="test-time centre-crop zooms, comma-separated factors in (1, 1.5] "
                             f"(default {','.join(str(z) for z in DEFAULT_ZOOMS)}, as conf/base; '' for none)")
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.min_face < 12:
            raise ValueError(f"--min-face must be >= 12 px, got {args.min_face}")
        if not args.margin > -0.5:
            raise ValueError(f"--margin must be > -0.5, got {args.margin}")
        if args.output and not Path(args.output).expanduser().resolve().parent.is_dir():
            raise ValueError(f"no folder for --output '{args.output}': create it first")
        if args.output and Path(args.output).expanduser().is_dir():
            raise ValueError(f"--output '{args.output}' is a folder: name a CSV file, e.g. {Path(args.output) / 'faces.csv'}")
        paths = _photo_paths(args.paths)
        from age_gender.photos import (
            COLUMNS,
            DetectSettings,
            PhotoPredictor,
            predict_stream,
            reader,
        )

        try:  # '' or spaces: no zoomed view; otherwise every comma-separated item a number
            zooms = tuple(float(z) for z in args.zooms.split(",")) if args.zooms.strip() else ()
        except ValueError:
            raise ValueError(f"--zooms must be comma-separated numbers, e.g. 1.05,1.1, got {args.zooms!r}") from None
        views = Views(not args.no_flip_average, zoom_factors(zooms, "--zooms"))
        predictor = PhotoPredictor(args.model, DetectSettings(args.detector, args.min_face, margin=args.margin),
                                   views=views)
    except ValueError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    import pandas as pd

    items = [(str(path), (lambda p=path: reader(p.read_bytes())())) for path in paths]
    rows, problems = [], 0
    for result in predict_stream(predictor, items, args.batch_size, len(items), progress=bool(args.output)):
        if result.problem:
            problems += 1
            print(f"unreadable photo '{result.name}': {result.problem}", file=sys.stderr)
        rows.extend({"file": result.name, **row} for row in result.rows)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if args.output:
        from age_gender.datasets import AtomicCSVDataset

        AtomicCSVDataset(filepath=str(Path(args.output).expanduser())).save(table)
        print(f"{len(table)} faces in {len(paths) - problems} of {len(paths)} photos -> {args.output}",
              file=sys.stderr)
    else:
        table.to_csv(sys.stdout, index=False)
    return 1 if problems else 0


def main(*args: Any, **kwargs: Any) -> Any:
    argv = list(args[0]) if args and isinstance(args[0], (list, tuple)) else sys.argv[1:]
    if argv[:1] == ["predict"]:
        sys.exit(predict_command(argv[1:]))
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)
    interactive = hasattr(sys, "ps1")
    kwargs["standalone_mode"] = not interactive
    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
