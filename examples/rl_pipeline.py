#!/usr/bin/python3
"""An RL pipeline on smos, end to end, with the Python client.

    actors  --push trajectories-->  <prefix>traj     --pop batches-->  learner
    actors  <--read the latest----  <prefix>weights  <--replace------  learner

- Each actor reads the latest weights (zero-copy), plays a trajectory with them, and pushes
  it: observations, actions, rewards and a small header, as the typed tracks of one entry.
- The learner pops batches of trajectories (blocking, zero-copy), "trains" on them, and
  publishes a new version of `weights` by replacing the entry: readers always see one whole
  version.

Everything is checked on the way: each trajectory is popped exactly once and intact, and
every read of the weights is one consistent version. Run it on a mounted store:

    examples/rl_pipeline.py --mount /mnt/smos --actors 4 --trajectories 200

It exits 0 and prints throughput figures, or exits 1 with what went wrong.
"""

import argparse
import multiprocessing
import os
import queue
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import smos_client  # noqa: E402


def trajectory(actor, i, version, steps, obs_shape):
    """Trajectory i of an actor: contents derived from (actor, i), so the learner can check
    them, plus the weights version the actor used."""
    rng = np.random.default_rng(actor * 1_000_003 + i)
    obs = rng.integers(0, 256, (steps, *obs_shape), np.uint8)
    action = rng.integers(0, 6, steps, np.int64)
    reward = rng.random(steps, np.float32)
    head = np.array([actor, i, version, int(obs.sum())], np.int64)
    return {"head": head, "obs": obs, "action": action, "reward": reward}


def weights_version(weights):
    """The version of a weights array, which is that version everywhere; else raises."""
    v = weights[0]
    if not (weights == v).all():
        raise AssertionError("a read of the weights mixed two versions")
    return int(v)


def actor(args, k, report):
    c = smos_client.Client(args.mount)
    versions = []
    for i in range(args.trajectories):
        with c.read_latest_from_object(args.prefix + "weights") as h:
            version = weights_version(h.value)  # the policy would run on h.value here
        versions.append(version)
        t = trajectory(k, i, version, args.steps, args.obs_shape)
        while True:
            try:
                c.push_to_object(args.prefix + "traj", t)
                break
            except OSError as e:  # the queue is full: the learner is behind
                if e.errno != 28:
                    raise
                time.sleep(0.001)
    report.put(("actor", k, versions))


def learner(args, total, report):
    c = smos_client.Client(args.mount)
    seen, bad, version = set(), 0, 0
    while len(seen) < total:
        batch = [c.pop_from_object(args.prefix + "traj")]
        while len(batch) < args.batch and len(seen) + len(batch) < total:
            h = c.pop_from_object(args.prefix + "traj", block=False)
            if h is None:
                break
            batch.append(h)
        loss = 0.0
        for h in batch:
            head, obs, action, reward = h.value["head"], h.value["obs"], h.value["action"], \
                h.value["reward"]
            a, i, v = int(head[0]), int(head[1]), int(head[2])
            want = trajectory(a, i, v, args.steps, args.obs_shape)
            if not (np.array_equal(obs, want["obs"]) and np.array_equal(action, want["action"])
                    and np.array_equal(reward, want["reward"])) or (a, i) in seen:
                bad += 1
            seen.add((a, i))
            loss += float(reward.mean())  # "training"
        c.batch_release_entry(batch)
        version += 1
        c.write_entry(args.prefix + "weights", "weights",
                      np.full(args.weights_size // 4, version, np.float32))
    report.put(("learner", bad, version, len(seen)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mount", default="/mnt/smos")
    p.add_argument("--prefix", default="rl_", help="object name prefix")
    p.add_argument("--actors", type=int, default=4)
    p.add_argument("--trajectories", type=int, default=100, help="per actor")
    p.add_argument("--steps", type=int, default=16, help="steps per trajectory")
    p.add_argument("--obs-shape", type=lambda s: tuple(int(x) for x in s.split("x")),
                   default=(84, 84, 4))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--weights-size", type=int, default=1 << 20, help="bytes")
    p.add_argument("--capacity", type=int, default=64, help="trajectories in flight")
    p.add_argument("--timeout", type=float, default=600, help="seconds")
    args = p.parse_args(argv)

    c = smos_client.Client(args.mount)
    steps = args.steps
    c.create_object(args.prefix + "traj", max_capacity=args.capacity, tracks=[
        ("head", np.int64, 4), ("obs", np.uint8, (steps, *args.obs_shape)),
        ("action", np.int64, steps), ("reward", np.float32, steps)])
    c.create_object(args.prefix + "weights", max_capacity=16)
    c.write_entry(args.prefix + "weights", "weights",
                  np.zeros(args.weights_size // 4, np.float32))

    ctx = multiprocessing.get_context("fork")
    report = ctx.Queue()
    total = args.actors * args.trajectories
    procs = [ctx.Process(target=learner, args=(args, total, report))]
    procs += [ctx.Process(target=actor, args=(args, k, report)) for k in range(args.actors)]
    t0 = time.monotonic()
    for proc in procs:
        proc.start()
    results, failed = [], False
    try:
        deadline = time.monotonic() + args.timeout
        while len(results) < len(procs) and not failed:
            try:
                results.append(report.get(timeout=0.2))
            except queue.Empty:
                # A process that died without reporting fails the run at once.
                failed = any(p.exitcode not in (None, 0) for p in procs)
                if time.monotonic() > deadline:
                    print("rl_pipeline: timed out", file=sys.stderr)
                    failed = True
        for proc in procs:
            proc.join(0 if failed else 60)
            failed |= proc.exitcode != 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        elapsed = time.monotonic() - t0
        for name in ("traj", "weights"):
            c.remove_object(args.prefix + name)

    learned = [r for r in results if r[0] == "learner"]
    acted = [r for r in results if r[0] == "actor"]
    if failed or len(learned) != 1 or len(acted) != args.actors:
        print("rl_pipeline: FAILED: a process crashed (see above)", file=sys.stderr)
        return 1
    _, bad, versions, popped = learned[0]
    seen_versions = sorted({v for r in acted for v in r[2]})
    monotonic = all(r[2] == sorted(r[2]) for r in acted)
    entry = sum(a.nbytes for a in trajectory(0, 0, 0, steps, args.obs_shape).values())
    print(f"rl_pipeline: {args.actors} actors, {popped} trajectories of {entry} bytes, "
          f"{versions} weight versions of {args.weights_size} bytes in {elapsed:.2f} s: "
          f"{popped / elapsed:.0f} trajectories/s, {popped * entry / elapsed / 1e6:.0f} MB/s; "
          f"actors saw {len(seen_versions)} versions")
    if bad or popped != total or not monotonic:
        print(f"rl_pipeline: FAILED: {bad} bad trajectories, {popped}/{total} popped, "
              f"versions in order: {monotonic}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
