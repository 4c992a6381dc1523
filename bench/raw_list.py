"""The no-op's floor: every key of a bucket listed with boto3's paginator, nothing else.

Any tool that syncs a folder to a bucket must at least list the bucket to learn that nothing
changed; this does only that (no local walk, no comparison, no state), through the same SDK
syncd uses. Run as a subprocess of the bench, like every other tool, so its time includes
interpreter start-up and imports too.

    python bench/raw_list.py ENDPOINT_URL BUCKET
"""

from __future__ import annotations

import argparse
import sys

import boto3
from botocore.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("endpoint_url")
    parser.add_argument("bucket")
    args = parser.parse_args(argv)

    client = boto3.client(
        "s3", endpoint_url=args.endpoint_url, config=Config(s3={"addressing_style": "path"})
    )
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=args.bucket):
        count += len(page.get("Contents", ()))
    print(f"listed {count} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
