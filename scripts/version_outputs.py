"""Move outputs saved before their catalog entries were versioned into Kedro's version layout.

A versioned entry (``versioned: true``) saves ``<filepath>/<version>/<name>``; a plain file left
at ``<filepath>`` by an older run is refused before any node (the run's last line names the file).
This moves every such file of the project's catalog to ``<filepath>/<its mtime as a version>/<name>``,
so the next run loads it as the newest version (and ``--load-versions`` can name it)::

    python scripts/version_outputs.py            # lists what it would move
    python scripts/version_outputs.py --apply    # moves them (renames only: nothing is copied or deleted)

Each move is two renames through a hidden name beside the file; a run killed in between is
finished by the next run of the script.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path


def versioned_patterns(project: Path, env: str | None) -> list[str]:
    """Glob patterns of the filepaths of every versioned catalog entry (factory placeholders as ``*``)."""
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(project / settings.CONF_SOURCE), env=env,
                                          **settings.CONFIG_LOADER_ARGS)
    catalog = loader["catalog"]
    return sorted({re.sub(r"\{[^}]*\}", "*", str(entry["filepath"])) for entry in catalog.values()
                   if isinstance(entry, dict) and entry.get("versioned") and "filepath" in entry})


def plan(project: Path, env: str | None = None) -> list[tuple[Path, Path]]:
    """(plain file, its versioned path) for every file to move."""
    moves = []
    for pattern in versioned_patterns(project, env):
        for found in sorted(project.glob(pattern)):
            hidden = found.with_name(f".{found.name}.unversioned")
            plain = hidden if hidden.is_file() else found
            if plain.is_file() and plain not in {m[0] for m in moves}:
                version = time.strftime("%Y-%m-%dT%H.%M.%S.000Z", time.gmtime(plain.stat().st_mtime))
                moves.append((plain, found / version / found.name))
        for hidden in sorted(project.glob(str(Path(pattern).parent / ".*.unversioned"))):
            target = hidden.with_name(hidden.name[1:].removesuffix(".unversioned"))
            if not target.is_file() and (hidden, target) not in moves:  # killed after the first rename
                version = time.strftime("%Y-%m-%dT%H.%M.%S.000Z", time.gmtime(hidden.stat().st_mtime))
                moves.append((hidden, target / version / target.name))
    return moves


def move(plain: Path, versioned: Path) -> None:
    """Rename ``plain`` to ``versioned`` (its parent's parent is ``plain``'s own path)."""
    hidden = plain if plain.name.endswith(".unversioned") else plain.with_name(f".{plain.name}.unversioned")
    if plain != hidden:
        os.rename(plain, hidden)
    versioned.parent.mkdir(parents=True, exist_ok=True)
    if versioned.exists():
        raise FileExistsError(f"{versioned} exists; {hidden} left as it is")
    os.rename(hidden, versioned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the Kedro project (default: here)")
    parser.add_argument("--env", default=None, help="the configuration environment (default: local)")
    parser.add_argument("--apply", action="store_true", help="move the files (default: only list them)")
    args = parser.parse_args()
    moves = plan(args.project.resolve(), args.env)
    for plain, versioned in moves:
        print(f"{'moved' if args.apply else 'would move'} {plain} -> {versioned}")
        if args.apply:
            move(plain, versioned)
    if not moves:
        print("nothing to move: every versioned entry is already in the version layout")


if __name__ == "__main__":
    main()
