#!/usr/bin/env python3
"""The CPython side of multiproc's benchmark: the same operations timed with
the standard library's `multiprocessing`.

    python3 bench_mp.py [--reps 5] [--scale 1.0] [--only start,pipe] [--out FILE]

Writes one JSON object, {"meta": {...}, "results": {figure: {...}}}, to
--out (and to stdout). Each figure is the median of --reps timed runs after
one untimed warm-up run; "min", "max", "samples", "unit" and "n" come with
it. Figure names are the ones `cargo bench --bench compare` pairs with its
own measurements. MB = 10**6 bytes; rates are per wall-clock second.

Sections: interp start pipe queue pool manager lock shm. Everything except
the start-method figures uses the "fork" context. Children meet the parent
at a Barrier (or answer a first message) before the clock starts, so only
the start section times process creation.

Spawn and forkserver children import this file again as __mp_main__: keep
module-level imports to what every child needs.
"""

import os
import sys
import time
import multiprocessing as mp

clock = time.perf_counter
KIB = 1024
MIB = 1024 * 1024


# ---------------------------------------------------------------- targets
# Module level, so that spawn and forkserver children can find them.

def do_nothing():
    pass


def square(x):
    return x * x


def echo_duplex(conn):
    while True:
        item = conn.recv()
        if item is None:
            return
        conn.send(item)


def echo_simplex(inbox, outbox):
    while True:
        item = inbox.recv()
        if item is None:
            return
        outbox.send(item)


def drain_bytes(data, ack):
    """For each round: a count k, then k byte messages; answers the byte total."""
    while True:
        k = data.recv()
        if k is None:
            return
        got = 0
        for _ in range(k):
            got += len(data.recv_bytes())
        ack.send(got)


def put_ints(q, barrier, n):
    barrier.wait()
    for i in range(n):
        q.put(i)


def put_blobs(q, barrier, n, size):
    blob = bytes([0x5A]) * size
    barrier.wait()
    for _ in range(n):
        q.put(blob)


def bump_under_lock(value, n, barrier):
    lock = value.get_lock()
    barrier.wait()
    for _ in range(n):
        with lock:
            value.value += 1
    barrier.wait()


# ------------------------------------------------------------- recording

class Run:
    """Options and the figures recorded so far."""

    def __init__(self, reps, scale):
        self.reps = reps
        self.scale = scale
        self.results = {}

    def n(self, base):
        """`base` scaled by --scale, at least 1."""
        return max(1, int(base * self.scale))

    def record(self, name, unit, once, n=None, note=None, samples=None):
        """Times `once()` (which returns the figure) after one warm-up call.

        With `samples` given (a list of --reps figures measured elsewhere),
        `once` is not called."""
        import statistics
        if samples is None:
            once()
            samples = [once() for _ in range(self.reps)]
        entry = {
            "median": statistics.median(samples),
            "min": min(samples),
            "max": max(samples),
            "unit": unit,
            "samples": samples,
        }
        if n is not None:
            entry["n"] = n
        if note:
            entry["note"] = note
        self.results[name] = entry
        print(f"  {name:<50} {entry['median']:>14.3f} {unit:<12} "
              f"[{entry['min']:.3f} .. {entry['max']:.3f}]", file=sys.stderr, flush=True)


def per_op(seconds, n, scale):
    return seconds / n * scale


def forked_child(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


# --------------------------------------------------------------- sections

def section_interp(run):
    """What any spawned Python child pays before multiprocessing runs."""
    exe = sys.executable
    n = run.n(10)
    for name, argv in (
        ("context_interp_startup_ms", [exe, "-c", "pass"]),
        ("context_interp_startup_nosite_ms", [exe, "-S", "-c", "pass"]),
        ("context_interp_startup_import_mp_ms", [exe, "-c", "import multiprocessing.spawn"]),
    ):
        def once(argv=argv):
            t0 = clock()
            for _ in range(n):
                pid = os.posix_spawn(exe, argv, os.environ)
                if os.waitpid(pid, 0)[1] != 0:
                    raise SystemExit(f"{argv} failed")
            return per_op(clock() - t0, n, 1e3)
        run.record(name, "ms", once, n=n, note="posix_spawn + waitpid of " + " ".join(argv[1:]))


TINY_MAIN = """\
import json, sys, time
import multiprocessing as mp

def do_nothing():
    pass

if __name__ == "__main__":
    method, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context(method)
    samples = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        for _ in range(n):
            p = ctx.Process(target=do_nothing)
            p.start()
            p.join()
        samples.append((time.perf_counter() - t0) / n * 1e3)
    print(json.dumps(samples[1:]))
"""


def section_start(run):
    """Process(target=noop).start(); join() for each start method."""
    counts = {"fork": run.n(100), "forkserver": run.n(50), "spawn": run.n(10)}
    for method, n in counts.items():
        ctx = mp.get_context(method)

        def one_by_one(ctx=ctx, n=n):
            t0 = clock()
            for _ in range(n):
                p = ctx.Process(target=do_nothing)
                p.start()
                p.join()
                assert p.exitcode == 0
            return per_op(clock() - t0, n, 1e3)

        def thirty_two(ctx=ctx):
            t0 = clock()
            ps = [ctx.Process(target=do_nothing) for _ in range(32)]
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            elapsed = clock() - t0
            assert all(p.exitcode == 0 for p in ps)
            return elapsed * 1e3

        run.record(f"process_start_join_{method}_ms", "ms/process", one_by_one, n=n,
                   note=f"{method}: Process(target=noop).start(); join(); main script = this file")
        run.record(f"process_start32_join_all_{method}_ms", "ms total", thirty_two, n=32,
                   note=f"{method}: start 32 processes, then join them all")

    # spawn from a parent holding 1 GiB of touched memory
    ballast = bytearray(b"\x01") * (1 << 30)
    ctx = mp.get_context("spawn")
    n = run.n(3)

    def one_by_one_big(ctx=ctx, n=n):
        t0 = clock()
        for _ in range(n):
            p = ctx.Process(target=do_nothing)
            p.start()
            p.join()
            assert p.exitcode == 0
        return per_op(clock() - t0, n, 1e3)

    run.record("process_start_join_spawn_1gib_parent_ms", "ms/process", one_by_one_big, n=n,
               note="spawn: Process(target=noop).start(); join() from a parent holding 1 GiB")
    del ballast

    # spawn children (and forkserver children before CPython 3.13) run the
    # main script again; with a 10-line main the figure is multiprocessing's
    # own cost rather than re-compiling this file.
    import json
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "tiny_main.py")
        with open(script, "w") as f:
            f.write(TINY_MAIN)
        for method, n in counts.items():
            out = subprocess.run([sys.executable, script, method, str(n), str(run.reps)],
                                 check=True, capture_output=True, text=True).stdout
            run.record(f"process_start_join_{method}_tiny_main_ms", "ms/process", None, n=n,
                       samples=json.loads(out),
                       note=f"as process_start_join_{method}_ms from a 10-line main script")


def section_pipe(run):
    ctx = mp.get_context("fork")
    n = run.n(20_000)

    def round_trips(send, recv):
        def once():
            t0 = clock()
            for i in range(n):
                send(i)
                recv()
            return per_op(clock() - t0, n, 1e6)
        return once

    def duplex_echo(name, note):
        mine, theirs = ctx.Pipe()
        child = forked_child(ctx, echo_duplex, theirs)
        theirs.close()
        mine.send(0)
        mine.recv()  # the child is running
        run.record(name, "us/roundtrip", round_trips(mine.send, mine.recv), n=n, note=note)
        mine.send(None)
        child.join()
        mine.close()

    duplex_echo("pipe_pingpong_int_rtt_us", "Pipe() (a socketpair): send(int), child echoes")
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})  # the child inherits the mask
    try:
        duplex_echo("pipe_pingpong_int_rtt_same_cpu_us",
                    "as pipe_pingpong_int_rtt_us with both processes on one CPU")
    finally:
        os.sched_setaffinity(0, saved)

    to_child_r, to_child_w = ctx.Pipe(duplex=False)
    from_child_r, from_child_w = ctx.Pipe(duplex=False)
    child = forked_child(ctx, echo_simplex, to_child_r, from_child_w)
    to_child_r.close()
    from_child_w.close()
    to_child_w.send(0)
    from_child_r.recv()
    run.record("pipe_simplex_pingpong_int_rtt_us", "us/roundtrip",
               round_trips(to_child_w.send, from_child_r.recv), n=n,
               note="two Pipe(duplex=False) (os.pipe): send(int), child echoes")
    to_child_w.send(None)
    child.join()

    volume = int(256 * MIB * run.scale)
    for prefix, duplex in (("pipe", True), ("pipe_simplex", False)):
        if duplex:
            mine, theirs = ctx.Pipe()
        else:
            theirs, mine = ctx.Pipe(duplex=False)
        ack_r, ack_w = ctx.Pipe(duplex=False)
        child = forked_child(ctx, drain_bytes, theirs, ack_w)
        theirs.close()
        ack_w.close()
        for size, label in ((64 * KIB, "64k"), (MIB, "1m")):
            blob = bytes([0xA5]) * size
            k = max(1, volume // size)

            def once(k=k, blob=blob):
                t0 = clock()
                mine.send(k)
                for _ in range(k):
                    mine.send_bytes(blob)
                got = ack_r.recv()
                elapsed = clock() - t0
                assert got == k * len(blob)
                return got / elapsed / 1e6

            run.record(f"{prefix}_send_bytes_{label}_MBps", "MB/s", once, n=k,
                       note=f"send_bytes x{k} of {size} B; the clock stops at the child's ack")
        mine.send(None)
        child.join()


def drain_queue(ctx, make_queue, producers, total, target=put_ints, extra=()):
    """Items per second from `producers` processes into one parent get() loop."""
    q = make_queue()
    each = total // producers
    barrier = ctx.Barrier(producers + 1)
    ps = [forked_child(ctx, target, q, barrier, each, *extra) for _ in range(producers)]
    barrier.wait()
    t0 = clock()
    for _ in range(each * producers):
        q.get()
    elapsed = clock() - t0
    for p in ps:
        p.join()
        assert p.exitcode == 0
    q.close()
    return each * producers, elapsed


def section_queue(run):
    ctx = mp.get_context("fork")
    total = run.n(200_000)
    for kind, make in (("queue", ctx.Queue), ("simplequeue", ctx.SimpleQueue)):
        for producers in (1, 4):
            def once(make=make, producers=producers):
                items, elapsed = drain_queue(ctx, make, producers, total)
                return items / elapsed
            run.record(f"{kind}_{producers}prod_int_items_per_s", "items/s", once,
                       n=total // producers * producers,
                       note=f"{producers} producer(s) put ints; the parent gets them")

    k = run.n(256)

    def blobs():
        items, elapsed = drain_queue(ctx, ctx.Queue, 1, k, put_blobs, (MIB,))
        return items * MIB / elapsed / 1e6

    run.record("queue_1prod_1MiB_bytes_MBps", "MB/s", blobs, n=k,
               note="1 producer puts 1 MiB bytes objects; the parent gets them")


def section_pool(run):
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
        big, small, calls = run.n(1_000_000), run.n(20_000), run.n(2_000)

        def rate(work, n):
            def once():
                t0 = clock()
                work(n)
                return n / (clock() - t0)
            return once

        def map_default(n):
            assert len(pool.map(square, range(n))) == n

        def map_one(n):
            assert len(pool.map(square, range(n), chunksize=1)) == n

        def unordered(n):
            assert sum(1 for _ in pool.imap_unordered(square, range(n), chunksize=1)) == n

        run.record("pool2_map_default_chunksize_tasks_per_s", "tasks/s",
                   rate(map_default, big), n=big, note="Pool(2).map(square, range(N))")
        run.record("pool2_map_chunksize1_tasks_per_s", "tasks/s", rate(map_one, small),
                   n=small, note="Pool(2).map(square, range(N), chunksize=1)")
        run.record("pool2_imap_unordered_chunksize1_tasks_per_s", "tasks/s",
                   rate(unordered, small), n=small,
                   note="Pool(2).imap_unordered(square, range(N), chunksize=1), consumed")

        def apply_latency():
            t0 = clock()
            for i in range(calls):
                pool.apply_async(square, (i,)).get()
            return per_op(clock() - t0, calls, 1e6)

        run.record("pool2_apply_async_get_latency_us", "us/task", apply_latency, n=calls,
                   note="apply_async(square, (i,)).get(), one at a time")

        nblobs = run.n(200)

        def map_blobs():
            blobs = [bytes([i % 256]) * MIB for i in range(nblobs)]
            t0 = clock()
            sizes = pool.map(len, blobs)
            elapsed = clock() - t0
            assert sizes == [MIB] * nblobs
            return nblobs * MIB / elapsed / 1e6

        run.record("pool2_map_1MiB_bytes_MBps", "MB/s", map_blobs, n=nblobs,
                   note="Pool(2).map(len, blobs): N bytes objects of 1 MiB")


def section_manager(run):
    ctx = mp.get_context("fork")
    n = run.n(10_000)

    def set_get_of(d):
        def set_get():
            t0 = clock()
            for i in range(n):
                d["key"] = i
                assert d["key"] == i
            return per_op(clock() - t0, n, 1e6)
        return set_get

    # Both processes on one CPU: the manager's server is started (forked)
    # while this process is pinned, so it inherits the mask.
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        with ctx.Manager() as pinned:
            run.record("manager_dict_set_get_same_cpu_us", "us/set+get",
                       set_get_of(pinned.dict()), n=n,
                       note="as manager_dict_set_get_us with the client and the server on one CPU")
    finally:
        os.sched_setaffinity(0, saved)
    per_call = [s / 2 for s in run.results["manager_dict_set_get_same_cpu_us"]["samples"]]
    run.record("manager_dict_op_same_cpu_us", "us/op", None, n=2 * n, samples=per_call,
               note="manager_dict_set_get_same_cpu_us / 2: one set or one get")

    with ctx.Manager() as manager:
        d = manager.dict()
        run.record("manager_dict_set_get_us", "us/set+get", set_get_of(d), n=n,
                   note="Manager().dict(): d['key'] = i; d['key'] (two proxy calls)")
        # The same run, per proxy call: comparable with older baselines.
        per_call = [s / 2 for s in run.results["manager_dict_set_get_us"]["samples"]]
        run.record("manager_dict_op_us", "us/op", None, n=2 * n, samples=per_call,
                   note="manager_dict_set_get_us / 2: one set or one get")

        q = manager.Queue()
        nq = run.n(10_000)

        def put_get():
            t0 = clock()
            for i in range(nq):
                q.put(i)
                q.get()
            return per_op(clock() - t0, nq, 1e6)

        run.record("manager_queue_put_get_us", "us/put+get", put_get, n=nq,
                   note="Manager().Queue(): q.put(i); q.get() in one process")

        def producer_rate():
            barrier = ctx.Barrier(2)
            child = forked_child(ctx, put_ints, q, barrier, nq)
            barrier.wait()
            t0 = clock()
            for _ in range(nq):
                q.get()
            elapsed = clock() - t0
            child.join()
            assert child.exitcode == 0
            return nq / elapsed

        run.record("manager_queue_items_per_s", "items/s", producer_rate, n=nq,
                   note="Manager().Queue(): a child puts ints, the parent gets them")


def section_lock(run):
    ctx = mp.get_context("fork")
    lock = ctx.Lock()
    n = run.n(1_000_000)

    def uncontended():
        acquire, release = lock.acquire, lock.release
        t0 = clock()
        for _ in range(n):
            acquire()
            release()
        return n / (clock() - t0)

    run.record("lock_uncontended_acq_rel_ops_per_s", "ops/s", uncontended, n=n,
               note="Lock(): acquire(); release() in one process")

    each = run.n(200_000) // 2

    def contended():
        value = ctx.Value("i", 0)
        barrier = ctx.Barrier(3)
        ps = [forked_child(ctx, bump_under_lock, value, each, barrier) for _ in range(2)]
        barrier.wait()
        t0 = clock()
        barrier.wait()
        elapsed = clock() - t0
        for p in ps:
            p.join()
        assert value.value == 2 * each
        return 2 * each / elapsed

    run.record("value_lock_2proc_contended_incr_ops_per_s", "ops/s", contended, n=2 * each,
               note="2 processes: with v.get_lock(): v.value += 1 on Value('i')")


def section_shm(run):
    from multiprocessing.shared_memory import SharedMemory
    n = run.n(2_000)

    def cycle():
        t0 = clock()
        for _ in range(n):
            owner = SharedMemory(create=True, size=4096)
            other = SharedMemory(name=owner.name)
            other.close()
            owner.close()
            owner.unlink()
        return per_op(clock() - t0, n, 1e6)

    run.record("shared_memory_create_attach_close_unlink_us", "us/cycle", cycle, n=n,
               note="SharedMemory(create=True, size=4096), attach by name, close both, unlink")


SECTIONS = {
    "interp": section_interp,
    "start": section_start,
    "pipe": section_pipe,
    "queue": section_queue,
    "pool": section_pool,
    "manager": section_manager,
    "lock": section_lock,
    "shm": section_shm,
}


def main():
    import argparse
    import json
    import platform
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default="", help="sections: " + " ".join(SECTIONS))
    parser.add_argument("--out", default="bench_mp.json")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {' '.join(SECTIONS)}")

    run = Run(max(1, args.reps), args.scale)
    started = clock()
    for name in chosen:
        print(f"[{name}]", file=sys.stderr, flush=True)
        SECTIONS[name](run)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    document = {
        "meta": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "reps": run.reps,
            "scale": run.scale,
            "sections": chosen,
            "statistic": "median of reps after one warm-up",
            "loadavg_end": load,
            "total_s": round(clock() - started, 2),
        },
        "results": run.results,
    }
    text = json.dumps(document, indent=1)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
