#!/usr/bin/env bash
# End-to-end check of docker-compose.yml with a real Docker engine, on a machine that cannot
# pull images and has no GPU (run as root from anywhere in the repository):
#
#   scripts/compose_check.sh            # everything below, then `docker compose down -v`
#   LD3_CHECK_KEEP=1 scripts/compose_check.sh   # leave the stack running at the end
#
# 1. engine: `docker info` works, or installs Debian's docker.io and starts dockerd in the
#    background; `docker compose` (v2), or Debian's docker-compose package (v2) unpacked into
#    the CLI plugin folder;
# 2. stand-in base images, built once and then reused (kept in $LD3_STANDIN_DIR and the
#    engine): a debootstrap'ed Debian bookworm (minbase) imported as ld3-standin/debian, and
#    from it ld3-standin/python (for python:3.11-slim), ld3-standin/postgres (for postgres:16)
#    and ld3-standin/redis (for redis:7) from Debian's packages (docker/standin/);
# 3. the project's images from the real docker/Dockerfile.api and docker/Dockerfile.worker,
#    with the build arguments pointed at the stand-in base and at PyPI (see below); sizes,
#    users, torch builds and a secrets scan are printed;
# 4. the stack steps (scripts/compose_check.py): the real docker-compose.yml plus
#    docker-compose.check.yml (stand-in postgres/redis images, no GPU reservation), up,
#    auth, a trust-region and an LD3 job on the CPU worker, worker SIGKILL + resume, postgres
#    and redis restarts under the API, down + up with the volumes, down -v.
# Each step prints its wall time. Exit status 0 only if every check passed.
#
# Here download.pytorch.org cannot be reached, so both images get torch from PyPI
# (LD3_CHECK_TORCH_INDEX_URL), whose Linux wheels are CUDA builds: the API image then carries
# CUDA torch instead of the CPU wheel its default index gives (docs/service.md has the sizes).
set -euo pipefail
cd "$(dirname "$0")/.."

# `compose_check.sh --wanted`: exit 0 if this machine should run the check (what .ci/run
# asks): LD3_COMPOSE_CHECK=1 always (the script installs and starts the engine itself),
# LD3_COMPOSE_CHECK=0 never, unset only when a Docker engine already answers `docker info`.
if [ "${1:-}" = --wanted ]; then
    case "${LD3_COMPOSE_CHECK:-}" in
        1|yes|true) exit 0 ;;
        0|no|false) exit 1 ;;
        "") command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
            exit $? ;;
        *) echo "LD3_COMPOSE_CHECK must be 1 or 0, not '$LD3_COMPOSE_CHECK'" >&2; exit 2 ;;
    esac
fi
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"  # the classic builder: no buildx plugin needed
STANDIN_DIR="${LD3_STANDIN_DIR:-/var/tmp/ld3-standin}"
SUITE="${LD3_STANDIN_SUITE:-bookworm}"
MIRROR="${LD3_STANDIN_MIRROR:-http://deb.debian.org/debian}"
PIP_INDEX="${LD3_CHECK_PIP_INDEX_URL:-https://pypi.org/simple}"
TORCH_INDEX="${LD3_CHECK_TORCH_INDEX_URL:-https://pypi.org/simple}"
CA_BUNDLE="${LD3_CHECK_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
export LD3_CHECK_PROJECT="${LD3_CHECK_PROJECT:-ld3check}"
export LD3_CHECK_API_PORT="${LD3_CHECK_API_PORT:-18000}"
mkdir -p "$STANDIN_DIR"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
T_START=$(now_ms)
TIMES=()
step() {  # step NAME COMMAND...: run it, print and record its wall time
    local step_name="$1" t0 rc=0 took
    shift
    printf '\n== %s\n' "$step_name"
    t0=$(now_ms)
    "$@" || rc=$?
    took=$(secs "$t0")
    TIMES+=("$(printf '%7s s  %s' "$took" "$step_name")")
    printf -- '-- %s: %s s%s\n' "$step_name" "$took" \
        "$([ $rc -eq 0 ] || echo " (FAILED, exit $rc)")"
    return $rc
}
summary() {
    printf '\nbuild step timings:\n'
    printf '  %s\n' "${TIMES[@]}"
    printf '  %7s s  image stage of the script\n' "$(secs "$T_START")"
}
need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --------------------------------------------------------------------------- 1. engine
engine() {
    if ! docker info >/dev/null 2>&1; then
        need dockerd || { echo "installing docker.io"; apt_install docker.io; }
        if ! pgrep -x dockerd >/dev/null; then
            echo "starting dockerd (log: $STANDIN_DIR/dockerd.log)"
            nohup dockerd >"$STANDIN_DIR/dockerd.log" 2>&1 &
        fi
        for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { echo "dockerd did not come up" >&2; return 1; }
    fi
    if ! docker compose version >/dev/null 2>&1; then
        # Debian's docker-compose is Compose v2 from trixie on; bookworm's is the old v1, so
        # take trixie's package (a static binary) with a private apt configuration.
        local d="$STANDIN_DIR/apt-compose" opts
        mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/deb"
        echo "deb $MIRROR trixie main" > "$d/sources.list"
        opts=(-o "Dir::Etc::sourcelist=$d/sources.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache")
        apt-get "${opts[@]}" update -qq
        (cd "$d/deb" && apt-get "${opts[@]}" download docker-compose 2>/dev/null)
        rm -rf "$d/x" && dpkg -x "$(ls "$d"/deb/docker-compose_*.deb | tail -n1)" "$d/x"
        install -D -m755 "$d/x/usr/libexec/docker/cli-plugins/docker-compose" \
            /usr/libexec/docker/cli-plugins/docker-compose
    fi
    docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'
    docker info --format 'storage driver {{.Driver}}, cgroup {{.CgroupVersion}}'
    docker compose version
}

# ----------------------------------------------------------------- 2. stand-in base images
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
debian_base() {
    if image_exists ld3-standin/debian:$SUITE; then
        echo "ld3-standin/debian:$SUITE exists (reused)"; return 0
    fi
    need debootstrap || apt_install debootstrap
    local root="$STANDIN_DIR/rootfs-$SUITE"
    if [ ! -f "$root/.complete" ]; then
        rm -rf "$root"
        debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$STANDIN_DIR/debootstrap.log"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
            "$root"/var/lib/apt/lists/*
        mkdir -p "$root/var/lib/apt/lists/partial"
        touch "$root/.complete"
    fi
    tar -C "$root" --exclude=./.complete -c . \
        | docker import -c 'CMD ["bash"]' - ld3-standin/debian:$SUITE >/dev/null
    echo "imported ld3-standin/debian:$SUITE"
}
standins() {
    local ctx="$STANDIN_DIR/context"
    mkdir -p "$ctx"
    cp docker/standin/*.sh "$ctx/"
    cp "$CA_BUNDLE" "$ctx/ca-bundle.crt"
    local base old
    for base in python postgres redis; do
        old=$(docker image inspect -f '{{.Id}}' "ld3-standin/$base:latest" 2>/dev/null || true)
        docker build -q --force-rm --network host --build-arg DEBIAN_IMAGE=ld3-standin/debian:$SUITE \
            -f "docker/standin/Dockerfile.$base" -t "ld3-standin/$base:latest" "$ctx" \
            >"$STANDIN_DIR/build-standin-$base.log" 2>&1 \
            || { tail -n 30 "$STANDIN_DIR/build-standin-$base.log"; return 1; }
        drop_previous "$old" "ld3-standin/$base:latest"
        echo "ld3-standin/$base:latest $(docker image inspect -f '{{.Id}}' \
            "ld3-standin/$base:latest" | cut -c8-19)"
    done
}

# ------------------------------------------------------------------- 3. the project images
drop_previous() {  # drop_previous OLD_ID TAG: remove the image a rebuild of TAG replaced
    local new
    new=$(docker image inspect -f '{{.Id}}' "$2" 2>/dev/null || true)
    if [ -n "$1" ] && [ "$1" != "$new" ]; then docker rmi "$1" >/dev/null 2>&1 || true; fi
}
# build_project_image NAME BASE_ARG: docker/Dockerfile.NAME -> ld3-NAME:latest on the stand-in
# Python base (passed as build arg BASE_ARG), PyPI as the package index.
build_project_image() {
    local name=$1 base_arg=$2 old
    old=$(docker image inspect -f '{{.Id}}' "ld3-$name:latest" 2>/dev/null || true)
    docker build --force-rm --network host -f "docker/Dockerfile.$name" \
        --build-arg "$base_arg=ld3-standin/python:latest" \
        --build-arg TORCH_INDEX_URL="$TORCH_INDEX" --build-arg PIP_INDEX_URL="$PIP_INDEX" \
        -t "ld3-$name:latest" . >"$STANDIN_DIR/build-$name.log" 2>&1 \
        || { tail -n 30 "$STANDIN_DIR/build-$name.log"; return 1; }
    grep -E '^(Step|Successfully built)|Using cache' "$STANDIN_DIR/build-$name.log" | tail -n 4
    drop_previous "$old" "ld3-$name:latest"
}
# Run inside an image: torch's version and build, and the size of torch + its CUDA wheels.
TORCH_PROBE='
import importlib.metadata as md, os, sys, torch
size = 0
for d in md.distributions():
    n = (d.metadata["Name"] or "").lower()
    if n in ("torch", "torchvision", "triton") or n.startswith(("nvidia-", "cuda-")):
        paths = (d.locate_file(f) for f in d.files or ())
        size += sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
cuda = torch.version.cuda or "none (CPU build)"
print("torch %s, CUDA %s; torch+torchvision+triton+nvidia/cuda wheels %d MB installed;"
      " python %s, uid %d" % (torch.__version__, cuda, size // 10**6,
                               sys.version.split()[0], os.getuid()))
'
describe_images() {
    local img size user bad=0
    printf '%-30s %9s  %s\n' image size user
    for img in ld3-api:latest ld3-worker:latest ld3-standin/python:latest \
               ld3-standin/postgres:latest ld3-standin/redis:latest ld3-standin/debian:$SUITE; do
        size=$(docker image inspect -f '{{.Size}}' "$img") || return 1
        user=$(docker image inspect -f '{{.Config.User}}' "$img")
        printf '%-30s %6d MB  %s\n' "$img" $((size / 1000000)) "${user:-root}"
    done
    docker system df | sed -n '1,2p'
    for img in ld3-api:latest ld3-worker:latest; do
        if [ "$(docker image inspect -f '{{.Config.User}}' "$img")" != ld3 ]; then
            echo "$img does not run as ld3" >&2; bad=1
        fi
        # no secret in the image: its environment and build history name no token/password
        if docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$img" \
                | grep -Eiq '^[A-Z_]*(TOKEN|PASSWORD|SECRET)[A-Z_]*='; then
            echo "$img: a secret-like variable in its environment" >&2; bad=1
        fi
        if docker history --no-trunc --format '{{.CreatedBy}}' "$img" \
                | grep -Eiq 'LD3_API_TOKEN=|PASSWORD=|SECRET='; then
            echo "$img: a secret-like value in its build history" >&2; bad=1
        fi
        # nor key / .env files among the copied sources, the home folder or /data
        if docker run --rm --entrypoint sh "$img" -c 'find /app /home /data \( -name ".env*" \
                -o -name "*.pem" -o -name "*.key" -o -name "id_*" \) 2>/dev/null | grep .'
        then
            echo "$img: key or .env files inside (above)" >&2; bad=1
        fi
        printf '%s: ' "$img"
        docker run --rm --entrypoint python "$img" -c "$TORCH_PROBE" || bad=1
    done
    [ "$bad" = 0 ] && echo "no secret found; both project images run as user ld3 (uid 1000)"
}

cleanup() {
    if [ -z "${LD3_CHECK_KEEP:-}" ] && docker info >/dev/null 2>&1; then
        LD3_API_TOKEN="${LD3_API_TOKEN:-unused}" docker compose -p "$LD3_CHECK_PROJECT" \
            -f docker-compose.yml -f docker-compose.check.yml down -v --remove-orphans \
            >/dev/null 2>&1 || true
    fi
}

rc=0
step "engine + compose plugin" engine || rc=$?
[ $rc -ne 0 ] || step "stand-in Debian base (debootstrap, cached)" debian_base || rc=$?
[ $rc -ne 0 ] || step "stand-in python/postgres/redis images" standins || rc=$?
[ $rc -ne 0 ] || step "ld3-api image (docker/Dockerfile.api)" build_project_image api PYTHON_IMAGE || rc=$?
[ $rc -ne 0 ] || step "ld3-worker image (docker/Dockerfile.worker)" build_project_image worker TORCH_IMAGE || rc=$?
[ $rc -ne 0 ] || step "image sizes, users, torch, secrets" describe_images || rc=$?
summary
if [ $rc -ne 0 ]; then
    echo "compose check: image stage FAILED" >&2
    exit $rc
fi
# The bearer token and the database password: from the environment, or fresh ones (never
# written anywhere but the containers' environment).
export LD3_API_TOKEN="${LD3_API_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
export LD3_DB_PASSWORD="${LD3_DB_PASSWORD:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}"
trap cleanup EXIT
# a stack left by an interrupted run (its volumes hold another password): start clean
cleanup
python3 scripts/compose_check.py || rc=$?
printf '  %7s s  whole script (%s)\n' "$(secs "$T_START")" \
    "$([ $rc -eq 0 ] && echo 'compose check passed' || echo 'compose check FAILED')"
exit $rc
