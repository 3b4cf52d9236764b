#!/usr/bin/python3
"""Zero-copy reads and writes from Python: mapping the mounted file vs user.smos.segment.

    examples/zero_copy_bench.py --mount /mnt/smos

For each entry size, it times (medians, microseconds and GB/s):
- read, warm: open an entry that was read before, map it, sum it as uint64, close;
- read, cold: the same on an entry written just before (nothing of it in any cache), which is
  what a pop or a read of new weights sees;
- write: fill a new entry of that size from an array and commit it: os.write() of the array,
  or create_entry's writable view through the segment or through the mount.
Each read goes through smos_client.Client(via=...), so it includes the client's own work
(open, xattrs, mmap, numpy view, release).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import smos_client  # noqa: E402


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mount", default="/mnt/smos")
    p.add_argument("--object", default="zero_copy_bench")
    p.add_argument("--sizes", default="28224,1048576,67108864", help="bytes, comma-separated")
    args = p.parse_args(argv)

    clients = {v: smos_client.Client(args.mount, via=v) for v in ("mount", "segment")}
    c = clients["segment"]
    c.create_object(args.object, max_capacity=64)
    rows = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            reps = max(5, min(301, (64 << 20) // size))
            data = np.random.default_rng(size).integers(0, 1 << 62, size // 8, np.uint64)
            expect = int(data.sum(dtype=np.uint64))

            def read(client, key):
                with client.read_from_object(args.object, key) as h:
                    assert int(h.value.sum(dtype=np.uint64)) == expect

            c.write_entry(args.object, "warm", data)
            for via, client in clients.items():
                read(client, "warm")  # prime
                rows.append((size, f"read warm, via {via}",
                             median_time(lambda: read(client, "warm"), reps)))

            for via, client in clients.items():
                times = []
                for i in range(reps):
                    c.write_entry(args.object, f"cold{i % 4}", data)
                    t = time.perf_counter()
                    read(client, f"cold{i % 4}")
                    times.append(time.perf_counter() - t)
                rows.append((size, f"read cold, via {via}", statistics.median(times)))

            def write_call():
                c.delete_entry(args.object, c.push_to_object(args.object, data))

            def write_view(client):
                h = client.create_entry(args.object, data.dtype, data.shape)
                h.value[:] = data
                c.delete_entry(args.object, h.commit())

            rows.append((size, "write, os.write()", median_time(write_call, reps)))
            for via, client in clients.items():
                rows.append((size, f"write, create_entry view via {via}",
                             median_time(lambda: write_view(client), reps)))
    finally:
        c.remove_object(args.object)

    print(f"{'bytes':>10}  {'operation':<36} {'median us':>10} {'GB/s':>7}")
    for size, what, t in rows:
        print(f"{size:>10}  {what:<36} {t * 1e6:>10.1f} {size / t / 1e9:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
