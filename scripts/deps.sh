#!/bin/bash
# scripts/deps.sh - install what building, testing and the demo need, on a
# fresh Debian 12 machine.  Idempotent; run as root.  The output of apt goes
# to a log file; one line says what happened.
set -euo pipefail

PACKAGES=(
	build-essential
	postgresql-15
	postgresql-server-dev-15
	postgresql-15-pgtap
	libtap-parser-sourcehandler-pgtap-perl
	postgresql-15-cron
	libcurl4-openssl-dev
	libipc-run-perl
	python3
	curl
	gnuplot-nox
	prometheus-postgres-exporter
	prometheus
)
LOG=${TMPDIR:-/tmp}/batchflow-deps.log

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#PACKAGES[@]} packages present"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing ${missing[*]}; run as root to install them" >&2
	exit 1
fi

# Debian's postgresql-15 would create and start a default cluster on port
# 5432; the tests use their own throwaway clusters, so do not create one.
mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
	echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
fi

export DEBIAN_FRONTEND=noninteractive
{
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
} >>"$LOG" 2>&1 || {
	echo "deps: apt-get failed; see $LOG" >&2
	tail -20 "$LOG" >&2
	exit 1
}
# The exporter's and prometheus' packages start services where an init
# system runs; the tests start their own instances (prometheus also ships
# promtool, which checks and unit-tests monitoring/batchflow-alerts.yml).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now prometheus-postgres-exporter prometheus >/dev/null 2>&1 || true
fi
echo "deps: installed ${missing[*]}"
