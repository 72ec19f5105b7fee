#!/bin/sh
# Entry point of the hub and the nodes in compose.yaml:
#
#   start.sh hub    serve the hub
#   start.sh node   import this node's sample data once, then serve
#
# First it waits for the init services (pki, keys) to have written this
# service's configuration: compose.yaml cannot make the services depend on
# them (podman-compose turns depends_on into `podman --requires`, which
# restarts a finished one-shot container and then fails because it is not
# running). After 120 s it gives up with an error, and `restart: on-failure`
# tries again.
#
# The import is all or nothing (a failed one stores nothing and the
# container exits non-zero, to be retried); the marker in the data volume,
# written only after it succeeded, keeps restarts from importing again.
set -eu
role=${1:?usage: start.sh hub|node}
config=/etc/tabadul/$role.toml

# Each file appears whole (written elsewhere, then renamed): the config is
# the last file `keys` writes for this service, crl.pem the last of `pki`.
waited=0
until [ -e "$config" ] && [ -e /etc/tabadul/crl.pem ]; do
    if [ "$waited" -ge 120 ]; then
        echo "start.sh: no $config or crl.pem after 120 s: see the logs of the pki and keys services" >&2
        exit 1
    fi
    [ "$waited" -eq 0 ] && echo "start.sh: waiting for the pki and keys services"
    sleep 1
    waited=$((waited + 1))
done

case $role in
    hub)
        exec tabadul-hub serve --config "$config" \
            --listen 0.0.0.0:8443 --http-listen 0.0.0.0:9443 --metrics-listen 0.0.0.0:9100
        ;;
    node)
        marker=/var/lib/tabadul/.sample-imported
        if [ ! -e "$marker" ]; then
            tabadul-node --config "$config" import /usr/share/tabadul/sample.csv
            : >"$marker"
        fi
        exec tabadul-node --config "$config" serve --listen 0.0.0.0:7443 --metrics-listen 0.0.0.0:9100
        ;;
    *)
        echo "start.sh: unknown role $role (hub or node)" >&2
        exit 2
        ;;
esac
