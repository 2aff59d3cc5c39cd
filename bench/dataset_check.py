"""How long `segserve finetune` takes to refuse a broken dataset, naming every problem.

Target (issue 13): a dataset of 1,000 images with 20 problems is refused with all 20 named in
under 10 s. The dataset is generated (shapes, 256 px, semantic masks), then broken in five
ways, four files each: a mask deleted, a mask of the wrong size, mask values outside the
classes, a 0/255 mask that looks binary, an RGB mask. The time is that of `load_dataset`
(what `finetune` and `evaluate` run before anything else), best of ``--repeats``.

    python -m bench.dataset_check [--images 1000] [--size 256] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.training.datasets import DatasetError, load_dataset
from app.training.shapes import write_shapes_dataset
from bench.tiling import machine

BREAKAGES = ("missing", "wrong size", "values outside the classes", "binary 0/255", "RGB mode")


def break_dataset(root: Path, per_kind: int) -> dict[str, list[str]]:
    """Break ``per_kind`` masks of the training split each way; the file names per way."""
    masks = sorted((root / "masks/train").glob("*.png"))
    broken: dict[str, list[str]] = {}
    for k, kind in enumerate(BREAKAGES):
        chosen = masks[k * per_kind : (k + 1) * per_kind]
        broken[kind] = [p.stem for p in chosen]
        for path in chosen:
            if kind == "missing":
                path.unlink()
                continue
            mask = np.array(Image.open(path))
            if kind == "wrong size":
                Image.fromarray(mask[:-3]).save(path)
            elif kind == "values outside the classes":
                mask[:4, :4] = 7
                Image.fromarray(mask).save(path)
            elif kind == "binary 0/255":
                Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(path)
            else:
                Image.fromarray(np.stack([mask] * 3, axis=-1)).save(path)
    return broken


def measure(yaml_path: Path, repeats: int) -> tuple[list[float], list[str]]:
    times, problems = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            load_dataset(yaml_path)
        except DatasetError as exc:
            problems = [str(p) for p in exc.problems]
        else:
            raise SystemExit("the broken dataset was accepted")
        times.append(time.perf_counter() - started)
    return times, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="training images (1000)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (256)")
    parser.add_argument("--per-kind", type=int, default=4, help="broken files a way (4: 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/dataset_check"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segserve-check-") as tmp:
        print(f"generating {args.images} images of {args.size} px ...", flush=True)
        yaml_path = write_shapes_dataset(
            Path(tmp) / "data", format="masks", train=args.images, val=0, size=args.size
        )
        broken = break_dataset(Path(tmp) / "data", args.per_kind)
        times, problems = measure(yaml_path, args.repeats)
    expected = [stem for stems in broken.values() for stem in stems]
    named = [stem for stem in expected if any(stem in p for p in problems)]
    result: dict[str, Any] = {
        "images": args.images,
        "size": args.size,
        "problems_made": len(expected),
        "problems_reported": len(problems),
        "broken_files_named": len(named),
        "seconds_best": min(times),
        "seconds_all": times,
        "problems": problems,
        "machine": machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(
        f"{len(problems)} problems reported for {len(expected)} made, {len(named)} broken "
        f"files named; refused in {min(times):.2f} s (best of {args.repeats}; target < 10 s)\n"
        f"CPU: {result['machine']['cpu']}; results in {args.out}/results.json"
    )
    return 0 if len(named) == len(expected) else 1


if __name__ == "__main__":
    raise SystemExit(main())
