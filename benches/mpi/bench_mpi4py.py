"""mpi4py.futures dispatch rates for benches/mpi/run.sh.

Run as `mpiexec -n 3 python3 -m mpi4py.futures bench_mpi4py.py` (rank 0 runs
this file, ranks 1-2 are the executor's workers). Prints one JSON object per
figure, the same names as the Rust side (median of 5).
"""
import json
import statistics
import time

from mpi4py.futures import MPIPoolExecutor


def ident(x):
    return x


def rate(ex, n, chunksize):
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = list(ex.map(ident, range(n), chunksize=chunksize))
        dt = time.perf_counter() - t0
        assert len(out) == n and out[-1] == n - 1
        rates.append(n / dt)
    return statistics.median(rates)


def main():
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        list(ex.map(ident, range(2000), chunksize=1))  # warm up
        n1 = 20_000
        print(json.dumps({"name": "map chunksize 1", "rate": round(rate(ex, n1, 1)), "tasks": n1}))
        nd = 1_000_000
        # CPython's Pool default (len / (4 * workers)); mpi4py's own default is 1.
        cs = -(-nd // (4 * workers))
        print(json.dumps({"name": "map 1M ints, default chunksize", "rate": round(rate(ex, nd, cs)), "tasks": nd}))
        k = 500
        t0 = time.perf_counter()
        for i in range(k):
            assert ex.submit(ident, i).result() == i
        lat = (time.perf_counter() - t0) / k
        print(json.dumps({"name": "apply round trip", "rate": round(1 / lat), "tasks": k}))


if __name__ == "__main__":
    main()
