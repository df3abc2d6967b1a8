#!/usr/bin/env bash
# Installs the Debian packages the tests run: nginx (nginx-light), the load balancer of the mirrored-traffic
# test (server/tests/nginx_mirror.rs), which runs /usr/sbin/nginx itself on loopback ports, and promtool (package
# prometheus) for the alert-rule checks of tests/interop/test_kubernetes.py, and haproxy for the rolling-restart
# test (tests/interop/test_haproxy.py), debootstrap for the container image check
# (tests/interop/test_image.py); node and npm, then the npm packages of deploy/kubernetes/validate (its
# lockfile). The packages' own services are never
# started: a temporary policy-rc.d refuses them during the install.
set -euo pipefail

need=()
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v promtool >/dev/null || need+=(prometheus)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v npm >/dev/null || need+=(nodejs npm)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    # No service start from the package scripts (containers have no init; elsewhere the tests need no daemon).
    policy=/usr/sbin/policy-rc.d
    added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added=1
    fi
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
    [ -z "$added" ] || $sudo rm -f "$policy"
fi
# The kubernetes-models packages (KEDA, prometheus-operator kinds) at the lockfile's versions, from npm.
validate="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/kubernetes/validate"
if [ ! -d "$validate/node_modules" ] || [ "$validate/package-lock.json" -nt "$validate/node_modules" ]; then
    npm ci --prefix "$validate" --no-audit --no-fund --silent
    touch "$validate/node_modules"
fi
# The versions in use (first line of each; sed reads to the end, so no writer dies of SIGPIPE under pipefail).
/usr/sbin/nginx -v
promtool --version 2>&1 | sed -n 1p
/usr/sbin/haproxy -v 2>&1 | sed -n 1p
