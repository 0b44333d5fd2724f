#!/usr/bin/env bash
# Smoke test of what the README promises: `fedmesh dev` answers the real nats
# CLI and `fedmesh infer`, open and `--secure`. Needs fedmesh and nats on PATH (make smoke does it).
set -euo pipefail

# Five ports from here on, below the kernel's ephemeral range (a port in it can
# be taken by any outgoing connection of a test running beside us) and free now.
low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 50); do
  port=$(( 20000 + RANDOM % (low - 20010) ))
  free "$port" && free $(( port + 1 )) && free $(( port + 2 )) && free $(( port + 3 )) && free $(( port + 4 )) && break
done
http=$(( port + 1 ))
metrics=$(( port + 2 ))
url="nats://127.0.0.1:${port}"
work=$(mktemp -d)
log="$work/dev.log"
fail() { echo "SMOKE FAIL: $*"; echo "--- fedmesh dev log (tail)"; tail -40 "$log" || true; exit 1; }

fedmesh dev --listen "127.0.0.1:${port}" --http "127.0.0.1:${http}" --metrics-listen "127.0.0.1:${metrics}" \
  --store-dir "$work/js" --log-format json >"$log" 2>&1 &
dev=$!
cleanup() { kill -TERM "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Ready when a request is answered by a node (routers and nodes are up).
for i in $(seq 1 100); do
  if out=$(nats --server "$url" req fed.infer.generate hello --timeout 2s 2>&1) && grep -q 'Fed-Status: done' <<<"$out"; then
    break
  fi
  kill -0 "$dev" 2>/dev/null || fail "fedmesh dev exited"
  sleep 0.2
done
echo "$out"
grep -q 'Fed-Status: done' <<<"$out" || fail "nats req got no Fed-Status: done"
grep -q 'Fed-Node: ' <<<"$out" || fail "nats req answer has no Fed-Node"
grep -q 'Fed-Seq: 0' <<<"$out" || fail "nats req answer has no Fed-Seq"

# A stream read by a standard client that waits for the empty sentinel.
stream=$(nats --server "$url" req fed.infer.generate 'tell me a story' -H 'Fed-Stream:true' --replies 0 --wait-for-empty --timeout 5s 2>&1) \
  || fail "nats req --wait-for-empty: $stream"
grep -q 'Fed-Seq: 3' <<<"$stream" || fail "stream had fewer than 4 messages: $stream"

# The Go CLI, whole and streamed.
fedmesh --nats-url "$url" infer -c generate "hello" -v || fail "fedmesh infer"
fedmesh --nats-url "$url" infer -c generate --stream "hello stream" || fail "fedmesh infer --stream"

# No node serves this (valid) capability: a clear 503, well before the deadline.
if err=$(fedmesh --nats-url "$url" --timeout 10s infer -c custom.nobody "x" 2>&1); then fail "custom.nobody was answered: $err"; fi
grep -Eq 'fedmesh 503' <<<"$err" || fail "unserved capability: $err"

# What the README shows for looking inside.
# (Output is captured first: with pipefail, `nats … | grep -q` fails when grep exits early.)
buckets=$(nats --server "$url" kv ls 2>&1) || fail "nats kv ls: $buckets"
grep -q fed_catalog <<<"$buckets" || fail "nats kv ls has no fed_catalog: $buckets"
keys=$(nats --server "$url" kv ls fed_catalog 2>&1) || fail "nats kv ls fed_catalog: $keys"
grep -q 'nodes\.' <<<"$keys" || fail "no node keys in fed_catalog: $keys"
rec=$(nats --server "$url" kv get fed_catalog nodes.us-west-gpu-1 --raw 2>&1) || fail "nats kv get: $rec"
grep -q '"node_id":"us-west-gpu-1"' <<<"$rec" || fail "catalog record of us-west-gpu-1: $rec"
micro=$(nats --server "$url" micro ls 2>&1)
for s in fed-catalog fed-health fed-router fed-node; do grep -q "$s" <<<"$micro" || fail "nats micro ls lacks $s: $micro"; done
fedmesh --nats-url "$url" candidates -c generate || fail "fedmesh candidates"
stats=$(fedmesh --nats-url "$url" stats) || fail "fedmesh stats"
grep -q '"total_requests"' <<<"$stats" || fail "stats: $stats"

# The gateway answers curl.
curl -fsS "http://127.0.0.1:${http}/healthz" >/dev/null || fail "gateway /healthz"

# Every part's metrics on the one dev listener, with the GenAI names.
prom=$(curl -fsS "http://127.0.0.1:${metrics}/metrics") || fail "dev /metrics"
for f in gen_ai_server_request_duration_seconds gen_ai_server_time_to_first_token_seconds \
  fedmesh_router_decisions_total fedmesh_health_node_state fedmesh_catalog_nodes fedmesh_node_in_flight; do
  grep -q "^$f" <<<"$prom" || fail "dev /metrics lacks $f"
done

# fedmesh top, one frame of each view, as a script would read it.
for v in catalog health routing circuits stats policies help; do
  frame=$(fedmesh --nats-url "$url" top --once --view "$v" --width 80 --interval 300ms 2>&1) || fail "top --view $v: $frame"
  [[ -n "$frame" ]] || fail "top --view $v printed nothing"
done
grep -q 'us-west-gpu-1' <<<"$(fedmesh --nats-url "$url" top --once --view catalog --width 80)" || fail "top catalog lacks the demo node"

kill -TERM "$dev"
wait "$dev" || fail "fedmesh dev did not exit 0 on SIGTERM"
trap 'rm -rf "$work"' EXIT

# Secured mode: the README's lines against `fedmesh dev --secure DIR`.
sport=$(( port + 3 )); surl="nats://127.0.0.1:${sport}"; auth="$work/auth"; log="$work/dev-secure.log"
fedmesh dev --secure "$auth" --listen "127.0.0.1:${sport}" --http "127.0.0.1:$(( port + 4 ))" --metrics-listen off \
  --store-dir "$work/js-secure" --log-format json >"$log" 2>&1 &
dev=$!
trap cleanup EXIT
as_client() { nats --server "$surl" --creds "$auth/dev-client.creds" --inbox-prefix _INBOX.dev "$@"; }
for i in $(seq 1 100); do
  if out=$(as_client req fed.infer.generate.dev hello --timeout 2s 2>&1) && grep -q 'Fed-Status: done' <<<"$out"; then
    break
  fi
  kill -0 "$dev" 2>/dev/null || fail "fedmesh dev --secure exited"
  sleep 0.2
done
grep -q 'Fed-Status: done' <<<"$out" || fail "secured: nats --creds dev-client.creds req got no answer: $out"
buckets=$(nats --server "$surl" --creds "$auth/operator.creds" --inbox-prefix _INBOX.operator kv ls 2>&1) || fail "secured: operator kv ls: $buckets"
grep -q fed_catalog <<<"$buckets" || fail "secured: operator kv ls has no fed_catalog: $buckets"
fedmesh --nats-url "$surl" --creds "$auth/dev-client.creds" infer hello >/dev/null || fail "secured: fedmesh --creds infer"
stats=$(fedmesh --nats-url "$surl" --creds "$auth/operator.creds" stats) || fail "secured: fedmesh stats as operator"
grep -q '"total_requests"' <<<"$stats" || fail "secured stats: $stats"
# what the server refuses: no credential; a client reading requests, or writing fed_config
if out=$(nats --server "$surl" req fed.infer.generate hello --timeout 2s 2>&1); then fail "secured: a request without credentials was answered"; fi
grep -qi 'authorization violation' <<<"$out" || fail "secured: no credential: $out"
out=$(timeout 5 nats --server "$surl" --creds "$auth/dev-client.creds" --inbox-prefix _INBOX.dev sub 'fed.infer.>' 2>&1 || true)
grep -qi 'permissions violation' <<<"$out" || fail "secured: a client subscribed to fed.infer.>: $out"
out=$(as_client --timeout 2s kv put fed_config router.policy '{}' 2>&1 || true)
grep -qi 'permissions violation' <<<"$out" || fail "secured: a client wrote fed_config: $out"
# and in normal operation no part heard a permission violation
if grep -qi 'permissions violation' "$log"; then fail "secured: a part of the mesh hit a permission violation"; fi
kill -TERM "$dev"
wait "$dev" || fail "fedmesh dev --secure did not exit 0 on SIGTERM"
trap 'rm -rf "$work"' EXIT
echo "smoke: 1 passed, 0 failed"
