#!/usr/bin/env bash
# Installs the Debian packages the Rust tests run: nginx (nginx-light), the load balancer of the mirrored-traffic
# test (server/tests/nginx_mirror.rs), which runs /usr/sbin/nginx itself on loopback ports. The package's own
# service is never started: a temporary policy-rc.d refuses it during the install.
set -euo pipefail

if [ ! -x /usr/sbin/nginx ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    # No service start from the package scripts (containers have no init; elsewhere the test needs no daemon).
    policy=/usr/sbin/policy-rc.d
    added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added=1
    fi
    $sudo apt-get install -y -qq nginx-light >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx-light >/dev/null; }
    [ -z "$added" ] || $sudo rm -f "$policy"
fi
/usr/sbin/nginx -v
