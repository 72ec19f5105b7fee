#!/bin/sh
# One-shot set-up of the compose federation: secrets are made here, at run
# time, inside volumes; none is ever committed. compose.yaml runs it twice,
# as two services that may run at the same time (they write different
# files):
#
#   init.sh pki    in the tabadul-certs image: the network CA, a certificate
#                  for the hub, each node, an operator and an auditor, and a
#                  freshly signed CRL
#   init.sh keys   in the tabadul-audit image: the log signing keys (hub and
#                  nodes) and the nodes' witness keys, then hub.toml,
#                  node.toml and policy.toml, which need the verifier keys
#
# Two phases because each image holds one binary. Everything is made only
# if missing, so `up` after `up` keeps the CA, the keys and the logs they
# sign; only the CRL is re-signed, when a day old (it is valid for 7 days).
# Every file appears whole (written aside, then renamed), and the last one
# each phase writes for a service (crl.pem, <role>.toml) tells start.sh
# that its configuration is complete.
#
# Layout: /ca is the CA (only this script sees it); /out/<service> is the
# configuration volume that service mounts read-only at /etc/tabadul;
# /out/admin holds the operator's and auditor's credentials for the host.
#
# The script runs as root with only CAP_CHOWN: volumes that no image path
# pre-creates are root-owned under Docker, so root writes them, and hands
# each private key to uid 10001 (mode 0600: the binaries refuse a log key
# others may read). Directories stay root's, so the next run can still
# refresh the CRL without any other capability.
set -eu

NETWORK=${TABADUL_NETWORK:-alo}
HUB_ID=${TABADUL_HUB_ID:-alo}
MEMBERS=${TABADUL_MEMBERS:-MAR JOR EGY}
RUNTIME_UID=10001
phase=${1:?usage: init.sh pki|keys}

lower() { echo "$1" | tr '[:upper:]' '[:lower:]'; }

# Installs $2 as $1 if $1 is missing (atomically: a crash leaves no half file).
put() {
    [ -e "$1" ] && return 0
    rm -f "$1.tmp"
    cp "$2" "$1.tmp" && mv "$1.tmp" "$1"
}

# Writes stdin to $1 if $1 is missing, mode 0644 (configuration is no secret).
write_once() {
    if [ -e "$1" ]; then cat >/dev/null; return 0; fi
    rm -f "$1.tmp"
    cat >"$1.tmp" && chmod 0644 "$1.tmp" && mv "$1.tmp" "$1"
}

# Hands a new private key (made by root here) to the runtime user, owner
# only. chmod first: once the file is 10001's, root without CAP_FOWNER may
# no longer change its mode.
own_key() {
    chmod 0600 "$1"
    chown "$RUNTIME_UID:$RUNTIME_UID" "$1"
}

pki() {
    if [ ! -e /ca/ca.pem ]; then
        tabadul-certs init --network "$NETWORK" --ca-dir /ca
    fi
    # The CRL is valid for 7 days: give it a fresh window when it is a day
    # old (not at every run: each new CRL makes the hub and the nodes reload
    # their TLS configuration).
    if [ -n "$(find /ca/crl.pem -mmin +1440)" ]; then
        tabadul-certs crl --ca-dir /ca >/dev/null
    fi

    # issue <role> <id> <service> [--dns NAME | --ip ADDR]...: a key and
    # certificate for a service that has none, made in a scratch directory
    # of the CA volume and moved to the service's volume (the key last: its
    # presence means done), so no copy of the key stays with the CA.
    issue() {
        role=$1 id=$2 svc=$3
        shift 3
        [ -e "/out/$svc/$role.key" ] && return 0
        # Leftovers of an interrupted run (a .tmp key may already be 10001's,
        # which root without CAP_DAC_OVERRIDE cannot overwrite, only unlink).
        rm -rf /ca/scratch "/out/$svc/$role.pem.tmp" "/out/$svc/$role.key.tmp"
        tabadul-certs issue --ca-dir /ca --role "$role" --id "$id" --days 365 "$@" --out /ca/scratch >/dev/null
        cp "/ca/scratch/$role-$id.pem" "/out/$svc/$role.pem.tmp"
        mv "/out/$svc/$role.pem.tmp" "/out/$svc/$role.pem"
        cp "/ca/scratch/$role-$id.key" "/out/$svc/$role.key.tmp"
        own_key "/out/$svc/$role.key.tmp"
        mv "/out/$svc/$role.key.tmp" "/out/$svc/$role.key"
        rm -rf /ca/scratch
        echo "issued $(tabadul-certs show "/out/$svc/$role.pem" | sed -n 1p)"
    }
    # The hub's certificate also names localhost and 127.0.0.1: its ports
    # are published on the host's loopback, and curl or tabadul-hub query
    # there verify the name.
    issue hub "$HUB_ID" hub --dns hub --dns localhost --ip 127.0.0.1
    for m in $MEMBERS; do
        issue node "$m" "$(lower "$m")" --dns "node-$(lower "$m")"
    done
    issue operator operator admin
    issue auditor auditor admin

    for svc in hub admin $(for m in $MEMBERS; do lower "$m"; done); do
        put "/out/$svc/ca.pem" /ca/ca.pem
        if ! cmp -s /ca/crl.pem "/out/$svc/crl.pem"; then
            cp /ca/crl.pem "/out/$svc/crl.pem.tmp" && mv "/out/$svc/crl.pem.tmp" "/out/$svc/crl.pem"
        fi
    done
    echo "init pki: CA, certificates and CRL ready"
}

keys() {
    # keygen <origin> <file>: a log signing key, unless there is one already.
    keygen() {
        [ -e "$2" ] && return 0
        rm -f "$2.tmp" "$2.tmp.vkey"   # left by an interrupted run
        tabadul-audit keygen --origin "$1" --out "$2.tmp" >/dev/null
        own_key "$2.tmp"
        mv "$2.tmp.vkey" "$2.vkey"
        mv "$2.tmp" "$2"
        echo "key $(cat "$2.vkey")"
    }
    keygen "$NETWORK/hub/$HUB_ID" /out/hub/log.key
    hub_vkey=$(cat /out/hub/log.key.vkey)
    put /out/admin/hub.vkey /out/hub/log.key.vkey

    for m in $MEMBERS; do
        d=/out/$(lower "$m")
        keygen "$NETWORK/node/$m" "$d/log.key"
        keygen "$NETWORK/witness/$m" "$d/witness.key"

        # The same policy for the three demo members: the hub gets the
        # labour-force figures by sex; the public (the hub's anonymous
        # front door) gets the unemployment rate by sex.
        write_once "$d/policy.toml" <<EOF
# Written by deploy/compose/init.sh for $m (SYNTHETIC demo data).
version = "compose-$m"

[[rule]]
id = "hub-labour-force"
requester = "hub"
dataflows = ["UNE_RATE", "UNE_PERS", "LF_PERS"]
breakdowns = ["SEX"]

[[rule]]
id = "open-data"
requester = "public"
dataflows = ["UNE_RATE"]
breakdowns = ["SEX"]
EOF

        # Last: start.sh waits for this file.
        write_once "$d/node.toml" <<EOF
# Written by deploy/compose/init.sh for $m.
data_dir = "/var/lib/tabadul"
dictionary = "/usr/share/tabadul/dictionary.toml"
policy = "/etc/tabadul/policy.toml"
log_key = "/etc/tabadul/log.key"
witness_key = "/etc/tabadul/witness.key"
# The hub's log, which this node cosigns (witnesses).
witness_logs = ["$hub_vkey"]

[tls]
ca = "/etc/tabadul/ca.pem"
cert = "/etc/tabadul/node.pem"
key = "/etc/tabadul/node.key"
crl = "/etc/tabadul/crl.pem"
EOF
    done

    {
        cat <<EOF
# Written by deploy/compose/init.sh.
data_dir = "/var/lib/tabadul"
dictionary = "/usr/share/tabadul/dictionary.toml"
log_key = "/etc/tabadul/log.key"
deadline_ms = 3000
witness_interval_ms = 2000

[http]
public_tier = true
tokens = "/var/lib/tabadul/tokens.json"

[tls]
ca = "/etc/tabadul/ca.pem"
cert = "/etc/tabadul/hub.pem"
key = "/etc/tabadul/hub.key"
crl = "/etc/tabadul/crl.pem"
EOF
        for m in $MEMBERS; do
            d=/out/$(lower "$m")
            cat <<EOF

[[member]]
code = "$m"
endpoint = "node-$(lower "$m"):7443"
log_vkey = "$(cat "$d/log.key.vkey")"
witness_vkey = "$(cat "$d/witness.key.vkey")"
EOF
        done
    } | write_once /out/hub/hub.toml   # last: start.sh waits for it
    echo "init keys: log and witness keys, hub.toml, node.toml and policy.toml ready"
}

case $phase in
    pki) pki ;;
    keys) keys ;;
    *) echo "init.sh: unknown phase $phase (pki or keys)" >&2; exit 2 ;;
esac
