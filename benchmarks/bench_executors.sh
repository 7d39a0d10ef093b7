#!/bin/bash
# Throughput of the executors (issue 11): each run indexes a whole folder, with --executor sequential,
# processes and ray (a private local cluster, start and stop included), into a copy of one store that
# has trained models but no items, so every run does the same work. The stores they build are equal.
#
#   bash benchmarks/bench_executors.sh WORK_DIR TRAIN_FOLDER FOLDER...
#   bash benchmarks/bench_executors.sh /tmp/bench-exec /tmp/hbench/small2k /tmp/hbench/small2k /tmp/hbench/train60
#
# Prints one line per run: folder, executor, wall seconds, the run's JSON summary (stages in seconds).
set -euo pipefail
H="${HASHAE:-python -m hashae.cli.main}"
export OMP_NUM_THREADS=1 RAY_AUTH_MODE=disabled
work=$1; train=$2; shift 2
mkdir -p "$work/empty"
cd "$work"
[ -d T ] || $H index "$train" --store T --epochs 1 --executor sequential -q --json > train.json
[ -d E ] || { cp -r T E; $H index empty --store E --repoint -q --json > empty.json; }
for folder in "$@"; do
  for x in sequential processes ray; do
    name=$(basename "$folder")_$x
    rm -rf "S_$x"; cp -r E "S_$x"
    /usr/bin/time -f "%e s wall" $H index "$folder" --store "S_$x" --repoint --executor $x -q --json > "res_$name.json" 2> "time_$name.txt"
    echo "$folder $x $(tail -1 "time_$name.txt") $(cat "res_$name.json")  load: $(cut -d, -f3- /proc/loadavg 2>/dev/null || uptime)"
  done
done
