#!/usr/bin/env python3
"""Writes an offline job's output for the snapshot benchmarks, as pandas and
Spark jobs write it: Parquet, snappy, a column `user_id` (uint64) and a
column `items` (list of int64, or int32 with --item-type int32), one row
group per block of users (zstd instead of snappy with --compression zstd).

    python3 benchmark/make_parquet.py --users 5000000 --feed-len 200 --out feeds.parquet

User ids are sparse: spread over the whole u64 range (a seeded random
sample). By default the rows are written in random order, as a Spark job
without a sort leaves them; --order sorted writes them in increasing user
order (a job that sorts or groups by user), which `feed-server import`
streams straight through without sorting. Items are distinct per feed,
drawn from 1..=catalog. Needs pyarrow and numpy (pip install pyarrow).
"""

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000_000)
    parser.add_argument("--feed-len", type=int, default=200)
    parser.add_argument("--catalog", type=int, default=10_000_000)
    parser.add_argument("--block", type=int, default=250_000, help="users per row group")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    parser.add_argument("--order", choices=["random", "sorted"], default="random", help="row order of the users")
    parser.add_argument("--item-type", choices=["int64", "int32"], default="int64", help="the items' integer type")
    parser.add_argument("--compression", choices=["snappy", "zstd"], default="snappy")
    parser.add_argument("--ids-out", help="also write the user ids, one per line (for the load test)")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    # Distinct ids over the whole u64 range.
    ids = np.unique(rng.integers(0, 2**64 - 1, size=int(args.users * 1.01) + 16, dtype=np.uint64))
    ids = rng.permutation(ids)[: args.users]
    if len(ids) < args.users:
        raise SystemExit("not enough distinct ids drawn")
    if args.order == "sorted":
        ids.sort()
    item_type = pa.int32() if args.item_type == "int32" else pa.int64()
    if args.ids_out:
        np.savetxt(args.ids_out, ids, fmt="%d")

    schema = pa.schema([("user_id", pa.uint64()), ("items", pa.list_(item_type))])
    with pq.ParquetWriter(args.out, schema, compression=args.compression) as writer:
        for start in range(0, args.users, args.block):
            block = ids[start : start + args.block]
            n = len(block)
            # Distinct items per feed: random draws, repeats replaced until none are left.
            items = rng.integers(1, args.catalog + 1, size=(n, args.feed_len), dtype=np.int64)
            items.sort(axis=1)
            while True:
                repeats = np.zeros_like(items, dtype=bool)
                repeats[:, 1:] = items[:, 1:] == items[:, :-1]
                count = int(repeats.sum())
                if count == 0:
                    break
                items[repeats] = rng.integers(1, args.catalog + 1, size=count, dtype=np.int64)
                items.sort(axis=1)
            # Rank order is not id order.
            items = rng.permuted(items, axis=1)
            offsets = np.arange(0, (n + 1) * args.feed_len, args.feed_len, dtype=np.int32)
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(items.reshape(-1), type=item_type))
            writer.write_table(pa.table({"user_id": pa.array(block), "items": column}, schema=schema))


if __name__ == "__main__":
    main()
