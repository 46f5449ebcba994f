#!/usr/bin/env bash
# Benchmark (not a test): MpiPool::map against mpi4py.futures'
# MPIPoolExecutor.map, both with 2 worker ranks (`mpiexec -n 3`, MPICH), in
# the same run, alternating so that both see the same machine load.
#
#   benches/mpi/run.sh [rounds]     (default 2 rounds)
#
# Needs MPICH (see .ci/mpi) and python3; installs mpi4py with pip if missing
# (built from source against MPICH).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}
export MPICC=mpicc.mpich
MPIEXEC=${MPIEXEC:-mpiexec.mpich}
# --no-binary: the PyPI wheel looks for libmpi.so.12, which Debian's MPICH does
# not ship; the source build links the MPICH found by MPICC (takes minutes).
python3 -c "from mpi4py import MPI" 2>/dev/null ||
    MPICC=mpicc.mpich python3 -m pip install --no-binary=mpi4py mpi4py
exe=$(cargo bench --features mpi --bench mpi --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "mpi":
        print(m["executable"])')
log=$(mktemp)
for r in $(seq "$rounds"); do
    "$MPIEXEC" -n 3 "$exe" | sed 's/^/multiproc /' | tee -a "$log"
    "$MPIEXEC" -n 3 python3 -m mpi4py.futures benches/mpi/bench_mpi4py.py | sed 's/^/mpi4py /' | tee -a "$log"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$log" <<'PY'
import json, sys, statistics
figs = {}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    d = json.loads(js)
    figs.setdefault(d["name"], {}).setdefault(who, []).append(d["rate"])
print(f'{"figure (2 worker ranks)":34} {"multiproc":>14} {"mpi4py":>14} {"ratio":>8}')
for name, by in figs.items():
    ours = statistics.median(by["multiproc"])
    theirs = statistics.median(by["mpi4py"])
    unit = "calls/s" if "apply" in name else "tasks/s"
    print(f"{name:34} {ours:>10.0f} {unit} {theirs:>8.0f} {unit} {ours / theirs:>7.1f}x")
PY
rm -f "$log"
