#!/bin/bash
# bench/fuzz.sh - run the definition fuzzer (test/sql/fuzz_definitions.sql)
# for many cases against a running cluster and print its outcome counts.
#
#   bench/fuzz.sh SOCKETDIR PORT [DB] [CASES] [SEED]
#   (CASES default 1000000, SEED a number from -1 to 1, default 0.8)
#
# Every case is a definition mutated at random from a valid seed and passed
# to bf_register in a subtransaction; a finding is a rejection whose
# SQLSTATE is not one a definition problem may have, or whose message is
# not valid UTF-8 (listed under "Findings").  A crash of the backend shows
# as psql losing its connection.
set -euo pipefail
host=${1:?usage: bench/fuzz.sh SOCKETDIR PORT [DB] [CASES]}
port=${2:?missing PORT}
db=${3:-postgres}
cases=${4:-1000000}
seed=${5:-0.8}
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
psql -X -h "$host" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 \
	-v cases="$cases" -v seed="$seed" -v verbose=1 -f test/sql/fuzz_definitions.sql |
	sed -n '/all_cases_ran/,$p' | grep -v '^\(DROP\|RESET\)'
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v n="$cases" \
	'BEGIN { printf "%d cases in %.1f s (%.0f cases/s)\n", n, e - s, n / (e - s) }'
