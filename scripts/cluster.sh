#!/usr/bin/env bash
# A real, secured 3-server NATS cluster with JetStream (operator mode from
# `fedmesh auth init`, TLS for clients and routes, route authorization),
# every fedmesh service twice as its own process on its own credential, and
# node agents on different servers. Shows that the parts share work through
# queue groups and KV, wherever they are connected, with the server
# enforcing every role. Needs bin/ from `make build tools` and openssl.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
work=$(mktemp -d)
# ports base+1…base+203, below the kernel's ephemeral range (any outgoing
# connection may hold a port in it)
low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
base=$(( 21000 + RANDOM % (low - 21300) ))
pids=()
fail() { echo "CLUSTER FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -15 "$f"; done; exit 1; }
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Auth material, one credential per part, a CA and a server certificate.
"$bin/fedmesh" auth init "$work/auth" >/dev/null || fail "fedmesh auth init"
issue() { "$bin/fedmesh" auth issue "$work/auth" "$@"; }
# each service instance its own credential: its name names its inbox (_INBOX.<role>.<name>)
for r in catalog health router; do for i in 1 2; do issue "$r" --name "$r-$i" --out "$work/$r-$i.creds" 2>>"$work/issue.log" || fail "issue $r-$i"; done; done
issue operator --out "$work/operator.creds" 2>>"$work/issue.log" || fail "issue operator"
issue client --tenant t1 --out "$work/client.creds" 2>>"$work/issue.log" || fail "issue client"
mkdir -p "$work/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=fedmesh-test-ca -keyout "$work/tls/ca-key.pem" -out "$work/tls/ca.pem" 2>/dev/null || fail "CA"
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$work/tls/server-key.pem" -out "$work/tls/server.csr" 2>/dev/null || fail "server key"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$work/tls/san.ext"
openssl x509 -req -in "$work/tls/server.csr" -CA "$work/tls/ca.pem" -CAkey "$work/tls/ca-key.pem" -CAcreateserial -days 1 \
  -extfile "$work/tls/san.ext" -out "$work/tls/server.pem" 2>/dev/null || fail "server certificate"
route_pw=$(openssl rand -hex 16)

routes=""
for i in 1 2 3; do routes+="nats-route://route:$route_pw@127.0.0.1:$((base + 100 + i)),"; done
routes=${routes%,}
for i in 1 2 3; do
  sed -e "s|@NAME@|n$i|" -e "s|@CLIENT_PORT@|$((base + i))|" -e "s|@HTTP_PORT@|$((base + 200 + i))|" \
      -e "s|@CLUSTER_PORT@|$((base + 100 + i))|" -e "s|@STORE@|$work/js$i|" -e "s|@ROUTES@|$routes|" \
      -e "s|@AUTH@|auth|" -e "s|@TLS@|$work/tls|" -e "s|@ROUTE_PASSWORD@|$route_pw|" \
      "$root/deploy/nats/cluster-node-secure.conf.tmpl" > "$work/n$i.conf"
  "$bin/nats-server" -c "$work/n$i.conf" > "$work/server$i.log" 2>&1 &
  pids+=($!)
done
url() { echo "tls://127.0.0.1:$((base + $1))"; }
# the nats CLI as a role: --creds, the CA, and the role's own inbox prefix
nats_as() { local who=$1 prefix=$2; shift 2; "$bin/nats" --creds "$work/$who.creds" --tlsca "$work/tls/ca.pem" --inbox-prefix "$prefix" "$@"; }
# Ready when every server reports a healthy JetStream (meta leader elected).
for i in $(seq 1 150); do
  ok=0
  for j in 1 2 3; do curl -fs "http://127.0.0.1:$((base + 200 + j))/healthz" >/dev/null 2>&1 && ok=$((ok + 1)); done
  [ "$ok" = 3 ] && break
  sleep 0.2
done
[ "$ok" = 3 ] || fail "the cluster never became healthy"
# Replicated buckets, made before the services start (they open what exists).
# (only the operator may create them)
for b in fed_catalog fed_health fed_config; do
  nats_as operator _INBOX.operator --server "$(url 1)" kv add "$b" --replicas 3 --history 1 >/dev/null || fail "kv add $b"
done
# and the out-of-band bodies' object store (buckets.BlobConfig: file storage, objects expire after 10 min)
nats_as operator _INBOX.operator --server "$(url 1)" object add fed_blobs --replicas 3 --ttl 10m --storage file \
  --description "fedmesh: out-of-band request bodies and answers, deleted when their request ends" >/dev/null || fail "object add fed_blobs"

run() { local name=$1 server=$2 creds=$3; shift 3
  "$bin/$name" --nats-url "$(url "$server")" --creds "$creds" --tls-ca "$work/tls/ca.pem" --log-format json "$@" \
    > "$work/$name-$server-$RANDOM.log" 2>&1 & pids+=($!); }
run catalog 1 "$work/catalog-1.creds"; run catalog 2 "$work/catalog-2.creds"
run health 2 "$work/health-1.creds";   run health 3 "$work/health-2.creds"
run router 1 "$work/router-1.creds";   run router 3 "$work/router-2.creds"
sleep 2
for n in "a us-west 1" "b eu-west 2" "c ap-south 3"; do
  set -- $n
  issue node --node-id "node-$1" --region "$2" --clearance internal --out "$work/node-$1.creds" 2>>"$work/issue.log" || fail "issue node-$1"
  run nodeagent "$3" "$work/node-$1.creds" --node-id "node-$1" --region "$2" --models m1:generate --backend synthetic
done

declare -A seen=()
for i in $(seq 1 150); do
  out=$(nats_as client _INBOX.t1 --server "$(url $(( i % 3 + 1 )))" req fed.infer.generate.t1 "hello $i" --timeout 3s 2>&1) || { sleep 0.2; continue; }
  grep -q 'Fed-Status: done' <<<"$out" || continue
  node=$(sed -n 's/.*Fed-Node: \([A-Za-z0-9_-]*\).*/\1/p' <<<"$out" | head -1)
  seen[$node]=1
  [ "${#seen[@]}" -ge 1 ] && [ "$i" -ge 30 ] && break
done
[ "${#seen[@]}" -ge 1 ] || fail "no request was answered through the cluster"

# Routing can spread: round robin makes every node answer.
nats_as operator _INBOX.operator --server "$(url 2)" kv put fed_config router.policy '{"strategy":"round_robin"}' >/dev/null
sleep 1
declare -A rr=()
for i in $(seq 1 30); do
  out=$(nats_as client _INBOX.t1 --server "$(url $(( i % 3 + 1 )))" req fed.infer.generate.t1 "rr $i" --timeout 3s 2>&1) || continue
  node=$(sed -n 's/.*Fed-Node: \([A-Za-z0-9_-]*\).*/\1/p' <<<"$out" | head -1)
  [ -n "$node" ] && rr[$node]=1
done
[ "${#rr[@]}" -eq 3 ] || fail "round robin over the cluster reached ${#rr[@]} of 3 nodes: ${!rr[*]}"

# Every instance answers $SRV.PING with its own reply: two of each service, wherever connected.
for svc in fed-router fed-catalog fed-health; do
  n=$(nats_as operator _INBOX.operator --server "$(url 1)" req "\$SRV.PING.$svc" '' --replies 0 --timeout 1s --raw 2>/dev/null | grep -c '"name":"'"$svc"'"' || true)
  [ "$n" -ge 2 ] || fail "expected 2 instances of $svc to answer \$SRV.PING.$svc, got $n"
done
# Denied as it should be: a client reading every request, a client writing the policy.
# (the nats CLI reports a denied publish as a permissions violation, not always by its exit code)
out=$(nats_as client _INBOX.t1 --server "$(url 1)" kv put fed_config router.policy '{}' 2>&1 || true)
grep -qi 'permissions violation\|authorization' <<<"$out" || fail "a client credential wrote fed_config: $out"
out=$(nats_as client _INBOX.t1 --server "$(url 1)" req fed.infer.generate.mallory "x" --timeout 1s 2>&1 || true)
grep -qi 'permissions violation' <<<"$out" || fail "a client of t1 published as tenant mallory: $out"
out=$(nats_as client _INBOX.t1 --server "$(url 1)" sub 'fed.infer.>' --count 1 --timeout 1s 2>&1 || true)
grep -qi 'permissions violation' <<<"$out" || fail "a client of t1 subscribed to every request: $out"
violations=$(cat "$work"/*.log | grep -ci 'permissions violation' || true)
[ "$violations" = 0 ] || fail "$violations permission violations in the services' logs"
echo "cluster: 1 passed, 0 failed (secured; nodes answering: ${!rr[*]})"
