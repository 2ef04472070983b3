#!/bin/sh
# Runs every measurement of BENCHMARKS.md in one go, from the repository
# root, and keeps the outputs in a dated directory:
#
#	sh e2e/load/benchmarks.sh [OUT_DIR]
#
# About 25 minutes on a 2-core machine. Each step is bounded by the load
# tool's own -timeout; nothing leaves 127.0.0.1.
set -eu
out=${1:-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/load" ./e2e/load
go build -o "$bin/controlplane" ./cmd/controlplane
go build -o "$bin/agent" ./cmd/agent

step() { # name, command...
	name=$1
	shift
	echo "== $name: $*" | tee "$out/$name.txt"
	{ uptime; "$@"; uptime; } 2>&1 | tee -a "$out/$name.txt"
}

{ date -u; nproc; free -h; grep -m1 'model name' /proc/cpuinfo; go version; uptime; } >"$out/machine.txt"
step codec go test -run '^$' -bench . -benchmem -count 3 ./protocol
step dispatcher go test -run '^$' -bench 'Dispatch|APISubmit' -benchmem -count 3 ./controlplane
step store go test -run '^$' -bench . -benchmem -count 3 ./controlplane/store/sqlite
step roundtrip "$bin/load" -mode roundtrip -jobs 10000 -repeat 3
step throughput "$bin/load" -mode throughput -agents 100 -jobs 20000 -concurrency 200 -repeat 3 -cpuprofile "$out/throughput.prof"
go tool pprof -top -nodecount=40 -tagfocus side=controlplane "$bin/load" "$out/throughput.prof.1" >"$out/throughput-top.txt" 2>&1 || true
go tool pprof -tags "$bin/load" "$out/throughput.prof.1" >"$out/throughput-tags.txt" 2>&1 || true
# Where the CPU goes: the share of all samples that are the control
# plane's (profile label side=controlplane) with each of these in the stack
# (they overlap: the store's system calls count under both), and the
# unlabelled samples (GC, scheduler: the runtime's own goroutines).
prof="$out/throughput.prof.1"
for cat in 'store=controlplane/store/sqlite' 'json=encoding/json' 'syscalls=syscall\.' \
	'http=net/http\.' 'websocket=gorilla/websocket' 'logging=go\.uber\.org/zap'; do
	printf '%s\t' "${cat%%=*}"
	go tool pprof -top -nodecount=100000 -nodefraction=0 -tagfocus side=controlplane -focus "${cat#*=}" \
		"$bin/load" "$prof" 2>/dev/null | grep -m1 'Showing nodes accounting' || echo
done >"$out/throughput-where.txt"
printf 'unlabelled\t' >>"$out/throughput-where.txt"
go tool pprof -top -nodecount=100000 -nodefraction=0 -tagignore side=. "$bin/load" "$prof" 2>/dev/null |
	grep -m1 'Showing nodes accounting' >>"$out/throughput-where.txt" || echo >>"$out/throughput-where.txt"
step throughput-sim "$bin/load" -mode throughput -sim -agents 100 -jobs 20000 -concurrency 200 -repeat 3
for i in 1 2 3; do
	step "idle-$i" "$bin/load" -mode idle -bin "$bin" -steps 1000,5000,10000
done
step idle-go "$bin/load" -mode idle -bin "$bin" -cp-proc self -steps 1000,5000,10000
for i in 1 2 3; do
	step "agent-idle-$i" "$bin/load" -mode agent-idle -bin "$bin" -idle 60s
done
# Fault scenario 10: the reconnect storm, with the agents' spread and without.
step storm env E2E_STORM_AGENTS=1000 E2E_STORM_DOWNTIME=1s \
	go test -count=1 -v -run '^TestFaultReconnectStorm$' ./e2e/
step storm-no-rejoin env E2E_STORM_AGENTS=1000 E2E_STORM_DOWNTIME=1s E2E_STORM_REJOIN=off \
	go test -count=1 -v -run '^TestFaultReconnectStorm$' ./e2e/
echo "outputs in $out"
