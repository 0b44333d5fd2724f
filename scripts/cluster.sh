#!/usr/bin/env bash
# A real 3-server NATS cluster with JetStream, every fedmesh service twice as
# its own process, and node agents on different servers. Shows that the parts
# share work through queue groups and KV, wherever they are connected.
# Needs bin/ from `make build tools`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
work=$(mktemp -d)
base=$(( 21000 + RANDOM % 15000 ))
pids=()
fail() { echo "CLUSTER FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -15 "$f"; done; exit 1; }
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

routes=""
for i in 1 2 3; do routes+="nats-route://127.0.0.1:$((base + 100 + i)),"; done
routes=${routes%,}
for i in 1 2 3; do
  sed -e "s|@NAME@|n$i|" -e "s|@CLIENT_PORT@|$((base + i))|" -e "s|@HTTP_PORT@|$((base + 200 + i))|" \
      -e "s|@CLUSTER_PORT@|$((base + 100 + i))|" -e "s|@STORE@|$work/js$i|" -e "s|@ROUTES@|$routes|" \
      "$root/deploy/nats/cluster-node.conf.tmpl" > "$work/n$i.conf"
  "$bin/nats-server" -c "$work/n$i.conf" > "$work/server$i.log" 2>&1 &
  pids+=($!)
done
url() { echo "nats://127.0.0.1:$((base + $1))"; }
# Ready when every server reports a healthy JetStream (meta leader elected).
for i in $(seq 1 150); do
  ok=0
  for j in 1 2 3; do curl -fs "http://127.0.0.1:$((base + 200 + j))/healthz" >/dev/null 2>&1 && ok=$((ok + 1)); done
  [ "$ok" = 3 ] && break
  sleep 0.2
done
[ "$ok" = 3 ] || fail "the cluster never became healthy"
# Replicated buckets, made before the services start (they open what exists).
for b in fed_catalog fed_health fed_config; do
  "$bin/nats" --server "$(url 1)" kv add "$b" --replicas 3 --history 1 >/dev/null || fail "kv add $b"
done

run() { local name=$1 server=$2; shift 2; "$bin/$name" --nats-url "$(url "$server")" --log-format json "$@" > "$work/$name-$server-$RANDOM.log" 2>&1 & pids+=($!); }
run catalog 1; run catalog 2
run health 2;  run health 3
run router 1;  run router 3
sleep 2
run nodeagent 1 --node-id node-a --region us-west --models m1:generate --backend synthetic
run nodeagent 2 --node-id node-b --region eu-west --models m1:generate --backend synthetic
run nodeagent 3 --node-id node-c --region ap-south --models m1:generate --backend synthetic

declare -A seen=()
for i in $(seq 1 150); do
  out=$("$bin/nats" --server "$(url $(( i % 3 + 1 )))" req fed.infer.generate "hello $i" -H 'Fed-Tenant:t1' --timeout 3s 2>&1) || { sleep 0.2; continue; }
  grep -q 'Fed-Status: done' <<<"$out" || continue
  node=$(sed -n 's/.*Fed-Node: \([A-Za-z0-9_-]*\).*/\1/p' <<<"$out" | head -1)
  seen[$node]=1
  [ "${#seen[@]}" -ge 1 ] && [ "$i" -ge 30 ] && break
done
[ "${#seen[@]}" -ge 1 ] || fail "no request was answered through the cluster"

# Routing can spread: round robin makes every node answer.
"$bin/nats" --server "$(url 2)" kv put fed_config router.policy '{"strategy":"round_robin"}' >/dev/null
sleep 1
declare -A rr=()
for i in $(seq 1 30); do
  out=$("$bin/nats" --server "$(url $(( i % 3 + 1 )))" req fed.infer.generate "rr $i" --timeout 3s 2>&1) || continue
  node=$(sed -n 's/.*Fed-Node: \([A-Za-z0-9_-]*\).*/\1/p' <<<"$out" | head -1)
  [ -n "$node" ] && rr[$node]=1
done
[ "${#rr[@]}" -eq 3 ] || fail "round robin over the cluster reached ${#rr[@]} of 3 nodes: ${!rr[*]}"

# Every instance answers $SRV.PING with its own reply: two of each service, wherever connected.
for svc in fed-router fed-catalog fed-health; do
  n=$("$bin/nats" --server "$(url 1)" req "\$SRV.PING.$svc" '' --replies 0 --timeout 1s --raw 2>/dev/null | grep -c '"name":"'"$svc"'"' || true)
  [ "$n" -ge 2 ] || fail "expected 2 instances of $svc to answer \$SRV.PING.$svc, got $n"
done
echo "cluster: 1 passed, 0 failed (nodes answering: ${!rr[*]})"
