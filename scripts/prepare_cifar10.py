#!/usr/bin/env python
"""Decode CIFAR-10 once into the user cache (never into the repository).

    python scripts/prepare_cifar10.py --root /path/with/cifar10_jpg.tar.gz [--cache-dir DIR]

Sources, in order: <root>/cifar10_jpg.tar.gz, an existing cache, torchvision's files in <root>
(downloaded there with --download). See prune_cli/data/cifar10.py.
"""
import argparse
import logging
import sys
import time

import torch

from prune_cli.data import DataError
from prune_cli.data import cifar10
from prune_cli.data.images import cache_dir, data_root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None,
                   help="directory holding cifar10_jpg.tar.gz (default: $PRUNE_DATA_ROOT, else <cache>/data)")
    p.add_argument("--cache-dir", default=None,
                   help="where the decoded cache goes (default: $PRUNE_CACHE_DIR, else ~/.cache/prune-cli)")
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10 with torchvision if nothing else is found")
    p.add_argument("--force", action="store_true", help="decode again even if the cache is up to date")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = {"root": args.root, "cache_dir": args.cache_dir}
    t0 = time.perf_counter()
    try:
        path = cifar10.prepare(data_root(cfg), cache_dir(cfg), download=args.download, force=args.force)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = torch.load(path, map_location="cpu", weights_only=True)
    print(f"wrote {path}: {len(data['train_labels'])} train + {len(data['test_labels'])} test images "
          f"(uint8 {tuple(data['train_images'].shape[1:])}), source {data['source']}, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
