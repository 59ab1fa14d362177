#!/bin/bash
# scripts/private-pg.sh - a private copy of the PostgreSQL 15 installation,
# so that several checkouts can build, install and test batchflow on one
# machine at once without replacing each other's batchflow.so in the system
# library directory.
#
#   eval "$(bash scripts/private-pg.sh DIR)"
#
# Copies the server's library and share directories under DIR/pg (once; about
# 50 MB) and prints the PATH line that puts the copy's bin directory first.
# PostgreSQL finds its library and share directories relative to its own
# binary, so pg_config, make install, initdb, the server and the tests all use
# the copy from then on.  Everything else (scripts/test.sh, single TAP tests
# with prove, bench/) works unchanged under that PATH.
set -euo pipefail
dir=${1:?usage: eval "\$(bash scripts/private-pg.sh DIR)"}
sys_bin=$(/usr/bin/pg_config --bindir)
sys_lib=$(dirname "$sys_bin")
sys_share=$(/usr/bin/pg_config --sharedir)
sys_inc=$(/usr/bin/pg_config --includedir)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ ! -x "$dir/pg$sys_bin/postgres" ]; then
	mkdir -p "$dir/pg$(dirname "$sys_lib")" "$dir/pg$(dirname "$sys_share")"
	cp -a "$sys_lib" "$dir/pg$(dirname "$sys_lib")/"
	cp -a "$sys_share" "$dir/pg$(dirname "$sys_share")/"
	[ "$(id -u)" = 0 ] && chmod 755 "$dir" && chown -R postgres: "$dir/pg"
fi
# The headers are only read: a link to the system's will do.
if [ ! -e "$dir/pg$sys_inc" ]; then
	mkdir -p "$dir/pg$(dirname "$sys_inc")"
	ln -s "$sys_inc" "$dir/pg$sys_inc"
fi
echo "export PATH=\"$dir/pg$sys_bin:\$PATH\""
