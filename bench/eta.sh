#!/bin/bash
# bench/eta.sh - how close bf_progress's ETA comes to the time a loop really
# took to finish, on a throwaway cluster.
#
#   bash bench/eta.sh [--reps N] [--tsv]
#
# Two loops, each REPS times (default 3):
#   plain   200 items x pg_sleep(0.02) at concurrency 2 (the loop of the
#           issue: about 2 s, nothing holds its pace but the machine)
#   paced   250 items at concurrency 2, item i sleeping until
#           t0 + (i + 1) x 20 ms: a loop steady by construction, as in
#           test/sql/progress_eta.sql
# bf_progress is sampled every 50 ms; each sample's ETA is compared with
# the loop's real finished_at minus the sample's time.  Reported: the error
# |ETA / actual - 1| at the first sample past 10 %, and the median and
# maximum over the samples between 10 % and 90 % done.
set -euo pipefail
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"

REPS=3
TSV=0
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift 2 ;;
	--tsv) TSV=1; shift ;;
	*) echo "usage: bench/eta.sh [--reps N] [--tsv]" >&2; exit 2 ;;
	esac
done

trap bench_cluster_stop EXIT
bench_cluster_start

bench_register eta_plain parallel 2 "SELECT pg_sleep(0.02)"
bench_register eta_paced parallel 2 \
	"SELECT pg_sleep(greatest(0, extract(epoch FROM (\$3->'vars'->>'t0')::timestamptz + (\$2 + 1) * interval '20 ms' - clock_timestamp())))"
bq <<'SQL' >/dev/null
CREATE TABLE eta_sample (run bigint, at timestamptz, percent numeric, eta interval);
CREATE FUNCTION eta_poll(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        SELECT * INTO p FROM bf_progress(p_run);
        INSERT INTO eta_sample VALUES (p_run, clock_timestamp(), p.percent, p.eta);
        EXIT WHEN p.status <> 'running' OR clock_timestamp() > t0 + interval '5 minutes';
        PERFORM pg_sleep(0.05);
    END LOOP;
END;
$$;
SQL

# eta_errors RUN: "first10 median max samples" (errors in %).
eta_errors() {
	bq -F ' ' -c "
	  WITH e AS (
	    SELECT s.percent, abs(extract(epoch FROM s.eta) / extract(epoch FROM l.finished_at - s.at) - 1) * 100 AS err
	      FROM eta_sample s JOIN batchflow.loop l ON l.run_id = s.run
	     WHERE s.run = $1 AND s.percent BETWEEN 10 AND 90 AND s.eta IS NOT NULL)
	  SELECT round((SELECT err FROM e ORDER BY percent LIMIT 1)::numeric, 1),
	         round((percentile_cont(0.5) WITHIN GROUP (ORDER BY err))::numeric, 1),
	         round(max(err)::numeric, 1), count(*)
	    FROM e"
}

[ $TSV = 1 ] || printf '%-6s %4s %10s %10s %8s %8s\n' loop rep 'first>10%' median max samples
for rep in $(seq 1 "$REPS"); do
	for kind in plain paced; do
		if [ $kind = plain ]; then
			run=$(bq -c "SELECT bf_start('eta_plain', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 200) g)))")
		else
			run=$(bq -c "SELECT bf_start('eta_paced', jsonb_build_object('t0', clock_timestamp() + interval '0.3 seconds', 'items', (SELECT jsonb_agg(g) FROM generate_series(1, 250) g)))")
		fi
		bq -c "SELECT eta_poll($run)" >/dev/null
		bench_wait "$run"
		read -r first med max n <<<"$(eta_errors "$run")"
		if [ $TSV = 1 ]; then
			printf 'eta_%s_first_pct\t%s\t%s\neta_%s_median_pct\t%s\t%s\neta_%s_max_pct\t%s\t%s\n' \
				$kind "$rep" "$first" $kind "$rep" "$med" $kind "$rep" "$max"
		else
			printf '%-6s %4s %9s%% %9s%% %7s%% %8s\n' $kind "$rep" "$first" "$med" "$max" "$n"
		fi
	done
done
exit 0
}
