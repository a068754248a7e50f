"""Re-pack a seeded random sample of the UTKFace archive for the GPU check (never committed).

    python scripts/gpu_sample.py [N] [--archive PATH] [--out .gpu_sample/UTKFace_N.tar.gz]

Members keep their names (the labels) and bytes; the sample is written atomically.
"""

from __future__ import annotations

import argparse
import os
import random
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=3000)
    parser.add_argument("--archive", default=os.environ.get(
        "UTKFACE_ARCHIVE", str(REPO.parent / "shared" / "data" / "UTKFace.tar.gz")))
    parser.add_argument("--out", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out or REPO / ".gpu_sample" / f"UTKFace_{args.n}.tar.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.archive) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        if args.n > len(members):
            raise SystemExit(f"the archive has {len(members)} images, fewer than {args.n}")
        random.Random(args.seed).shuffle(members)
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w:gz") as sample:
            for member in sorted(members[:args.n], key=lambda m: m.name):
                sample.addfile(member, archive.extractfile(member))
    os.replace(tmp, out)
    print(f"{args.n} of {len(members)} images -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


if __name__ == "__main__":
    main()
