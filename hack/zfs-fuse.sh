#!/usr/bin/env bash
# Starts zfs-fuse for tests and the demo, and stops it again, but only when
# this script started it: a daemon someone else runs is left alone.
#   hack/zfs-fuse.sh start        install if missing, start if not answering;
#                                 prints a token if it started the daemon,
#                                 else "running"
#   hack/zfs-fuse.sh stop TOKEN   stop the daemon that start gave TOKEN for
# Only the caller holding the token stops the daemon, so a run never stops
# one that another run (or a person) is using.
set -euo pipefail
state=/run/dotmesh-csi-zfs-fuse
pidfile=$state/zfs-fuse.pid
tokenfile=$state/token

answering() { zpool list >/dev/null 2>&1; }

case "${1:-}" in
start)
	if ! command -v zfs-fuse >/dev/null 2>&1; then
		echo "zfs-fuse: installing (apt-get install -y zfs-fuse)" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y zfs-fuse >/dev/null
	fi
	if answering; then
		echo "zfs-fuse: already answering; leaving it as it is" >&2
		echo running
		exit 0
	fi
	mkdir -p "$state"
	# A pidfile left by a dead daemon makes zfs-fuse exit silently.
	if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
	zfs-fuse --no-kstat-mount --pidfile "$pidfile"
	for _ in $(seq 1 100); do
		if answering; then
			token=$(head -c8 /dev/urandom | od -An -tx1 | tr -d ' \n')
			echo "$token" >"$tokenfile"
			echo "zfs-fuse: started (pid $(cat "$pidfile"))" >&2
			echo "$token"
			exit 0
		fi
		sleep 0.1
	done
	echo "zfs-fuse: started but never answered 'zpool list' (it logs only to syslog)" >&2
	exit 1
	;;
stop)
	if [ -z "${2:-}" ] || [ "${2}" = running ] || [ "$(cat "$tokenfile" 2>/dev/null)" != "$2" ]; then
		echo "zfs-fuse: not started by this caller; leaving it"
		exit 0
	fi
	[ -f "$pidfile" ] || { echo "zfs-fuse: no pidfile; leaving it"; exit 0; }
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$pidfile" "$tokenfile"
	echo "zfs-fuse: stopped (pid $pid)"
	;;
*)
	echo "usage: $0 start | stop TOKEN" >&2
	exit 2
	;;
esac
