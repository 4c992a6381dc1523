"""The emulator's ceiling: every file of a folder put with boto3's put_object, 16 threads.

No listing, no comparison, no state, no metadata beyond the body: the least work any tool can
do to get the files into the bucket through the same SDK syncd uses. Run as a subprocess of
the bench, like every other tool, so its time includes interpreter start-up and imports too.

    python bench/raw_put.py ENDPOINT_URL BUCKET LOCAL_DIR [--threads 16]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("endpoint_url")
    parser.add_argument("bucket")
    parser.add_argument("local_dir", type=Path)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)

    config = Config(max_pool_connections=args.threads, s3={"addressing_style": "path"})
    # One client shared by the threads: boto3 clients are thread-safe.
    client = boto3.client("s3", endpoint_url=args.endpoint_url, config=config)
    files = [Path(folder) / name for folder, _, names in os.walk(args.local_dir) for name in names]

    def put(path: Path) -> None:
        key = path.relative_to(args.local_dir).as_posix()
        with path.open("rb") as body:
            client.put_object(Bucket=args.bucket, Key=key, Body=body)

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        for _ in pool.map(put, files):
            pass
    print(f"put {len(files)} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
