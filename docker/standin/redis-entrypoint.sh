#!/bin/sh
# Entrypoint of the redis stand-in image (the subset of the official one compose uses).
set -eu
case "${1:-}" in -*) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis .
        exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
    fi
    shift
    set -- redis-server "$@" --protected-mode no --bind '*'
fi
exec "$@"
