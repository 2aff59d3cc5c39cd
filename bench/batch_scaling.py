"""Seconds per image of a model's forward pass at several batch sizes, on this machine.

    .venv/bin/python bench/batch_scaling.py [--architecture deeplabv3_resnet50] [--device cpu]

Prints a table and writes bench/results/batch_scaling-<architecture>-<device>.json. Uses the
architecture untrained (seeded): speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision import models as tv_models

from bench.report import RESULTS_DIR, save_json


def measure(
    architecture: str, device: str, sizes: list[int], repeats: int
) -> list[dict[str, float]]:
    torch.manual_seed(0)
    model = tv_models.get_model(architecture, weights=None, weights_backbone=None).eval().to(device)
    x = torch.randn(max(sizes), 3, 520, 693, device=device)
    rows = []
    with torch.inference_mode():
        model(x[:1])  # warm-up
        for size in sizes:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(repeats):
                model(x[:size])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_batch = (time.perf_counter() - started) / repeats
            rows.append(
                {"batch_size": size, "s_per_batch": per_batch, "s_per_image": per_batch / size}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="deeplabv3_resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = measure(
        args.architecture, args.device, [int(s) for s in args.sizes.split(",")], args.repeats
    )
    base = rows[0]["s_per_image"]
    print(
        f"{args.architecture} on {args.device}, input 520x693, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("batch  s/batch  s/image  throughput vs batch 1")
    for row in rows:
        print(
            f"{row['batch_size']:>5}  {row['s_per_batch']:7.2f}  {row['s_per_image']:7.2f}  "
            f"{base / row['s_per_image']:.2f}x"
        )
    out = save_json(
        {"architecture": args.architecture, "device": args.device, "rows": rows},
        RESULTS_DIR / f"batch_scaling-{args.architecture}-{args.device}.json",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
