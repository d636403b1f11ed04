#!/usr/bin/env bash
# marea's OpenStack testbed: a real, throw-away control plane on 127.0.0.1 for the openstack driver's tests.
#   Keystone, Placement, Glance, Neutron (API server only: ML2 with a test mechanism driver that binds every
#   port, L3 service plugin for routers and floating IPs, no agents), Nova API / conductor / scheduler /
#   compute with the testbed's own virt driver (testbeds/openstack/guestvirt): servers of a root-filesystem
#   image (testbeds/guests.sh, Glance images debian-13-batch and debian-13-base) boot as real systemd-nspawn
#   guests that run cloud-init; servers of the placeholder image debian-12 stay FakeDriver servers.
#   RabbitMQ and MariaDB from Debian; OpenStack 2026.2 from PyPI, pinned by testbeds/openstack/constraints.txt.
#
#   Network: the bridge $BRIDGE holds $API_IP (the demo private subnet's gateway): every endpoint listens there
#   and on 127.0.0.1, and the catalog names $API_IP, so the host and the guests reach the same URLs. Guests
#   reach the host and each other, nothing else (no forwarding, FORWARD dropped for the bridge). A small agent
#   (openstack/l3agent.py) stands in for Neutron's L3 agent: each floating IP bound to a port is DNATed to the
#   port's fixed IP, so the host reaches a master at its floating IP. The guests' wheelhouse (marea's wheel and
#   its dependencies, testbeds/guests.sh wheelhouse) is served at http://$API_IP:$WHEEL_PORT/.
#
#   testbeds/openstack.sh install   apt packages + a venv OUTSIDE the repository (reused when present)
#   testbeds/openstack.sh start     first start: schemas, catalog, image, flavours, networks, then a database
#                                   snapshot; later starts restore the snapshot (a fresh, empty cloud).
#                                   Prints the client environment as shell lines on stdout.
#   testbeds/openstack.sh stop      stop every process this script started (by pid file)
#   testbeds/openstack.sh status | env | reset
#
# Env: MAREA_OS_VENV (/opt/marea-openstack-venv), MAREA_OS_STATE (/tmp/marea-openstack), MAREA_OS_COMPUTES (3),
#      MAREA_GUEST_BRIDGE (brmarea), MAREA_OS_API_IP (10.10.0.1), MAREA_GUEST_BASE (/var/lib/marea-guests).
# Test-only credentials: clouds "admin" and "demo" in $STATE/clouds.yaml, password "secret".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/openstack"
VENV="${MAREA_OS_VENV:-/opt/marea-openstack-venv}"
STATE="${MAREA_OS_STATE:-/tmp/marea-openstack}"
# Three fake compute hosts: Nova 34's resource tracker reads every allocation on its host from placement (one GET
# per instance) at each claim, under one host-wide lock, so a burst of N servers on one host costs ~N^2/2 placement
# calls in series; spread over three hosts it is a third per host and the hosts claim in parallel.
COMPUTES="${MAREA_OS_COMPUTES:-3}"
BRIDGE="${MAREA_GUEST_BRIDGE:-brmarea}"
API_IP="${MAREA_OS_API_IP:-10.10.0.1}"
# DevStack's floating range; never a TEST-NET range: this sandbox resolves its package registries into one
FIP_CIDR=172.24.4.0/24
WHEEL_PORT=8780
METADATA_PORT=8775
GUEST_BASE="${MAREA_GUEST_BASE:-/var/lib/marea-guests}"
export MAREA_GUEST_BRIDGE="$BRIDGE" MAREA_OS_API_IP="$API_IP"
PACKAGES=(keystone==30.0.0 nova==34.0.0 openstack-placement==16.0.0 glance==33.0.0 neutron==29.0.0
          openstacksdk gunicorn PyMySQL)
export PYTHONWARNINGS=ignore

# install, start, stop and reset change the testbed: one at a time on this machine, under the script's own lock
# ($STATE.lock; not the tests' /tmp/marea-lock.openstack, which a test session holds while it calls this script).
# `flock -o` closes the lock's descriptor for the script it runs, so no daemon started here inherits it: a daemon
# holding it would make every later start and stop wait forever.
LOCK="$STATE.lock"
case "${1:-}" in
  install|start|stop|reset)
    if [ "${MAREA_OS_LOCKED:-}" != "$LOCK" ]; then
      flock -n "$LOCK" true 2>/dev/null || echo "openstack.sh: waiting for $LOCK (another install/start/stop)" >&2
      MAREA_OS_LOCKED="$LOCK" exec flock -o "$LOCK" bash "${BASH_SOURCE[0]}" "$@"
    fi
    unset MAREA_OS_LOCKED ;;
esac

T0=$(date +%s%N)
log() { echo "[openstack.sh $(( ($(date +%s%N) - T0) / 1000000 )) ms] $*" >&2; }
die() { echo "openstack.sh: $*" >&2; exit 1; }

wait_http() { # url seconds
  local deadline=$(( $(date +%s) + $2 ))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timeout waiting for $1 (logs in $STATE/logs)"
    sleep 0.2
  done
}

rabbit_env() { # RabbitMQ private to this state dir, loopback only, own epmd
  RABBITMQ_HOME="$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-* | head -1)"
  export RABBITMQ_HOME HOME="$STATE/rabbitmq"
  export RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=25672
  export ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONFIG_FILE="$STATE/rabbitmq/rabbitmq.conf"
  export RABBITMQ_MNESIA_BASE="$STATE/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$STATE/logs/rabbitmq"
  export RABBITMQ_PID_FILE="$STATE/run/rabbitmq.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/rabbitmq/plugins"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

sql() { mariadb --defaults-file="$STATE/etc/my.cnf" -uroot "$@"; }

cmd_install() {
  if ! command -v mariadbd >/dev/null || ! command -v cloud-init >/dev/null \
     || [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends rabbitmq-server mariadb-server mariadb-client curl cloud-init >/dev/null
    # Debian starts both services on install: this testbed runs its own, on its own state dir.
    for svc in rabbitmq-server mariadb; do
      systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
    done
  fi
  if [ -f "$VENV/.marea-installed" ] && cmp -s "$VENV/.marea-installed" "$HERE/constraints.txt"; then
    log "venv $VENV already installed with these constraints"; return 0
  fi
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -c "$HERE/constraints.txt" "${PACKAGES[@]}" "$HERE/fakebind"
  cp "$HERE/constraints.txt" "$VENV/.marea-installed"
  log "installed into $VENV"
}

render() { sed -e "s#@STATE@#$STATE#g" -e "s#@API_IP@#$API_IP#g" "$1" > "$2"; }

network_up() {  # the guests' bridge, the host's address on it, and no way out of this machine for guests
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep " $API_IP/" >/dev/null || ip addr add "$API_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # floating IPs: routed to the bridge, where the L3 agent's DNAT turns them into the ports' fixed IPs
  ip route replace "$FIP_CIDR" dev "$BRIDGE"
  # nothing routed in or out of the bridge. Only routed traffic: with br_netfilter loaded (it is here), frames
  # between two guests on the bridge also pass FORWARD, with the bridge as both interfaces, and must pass.
  # the metadata service at its link-local address, as Neutron's metadata proxy gives it on a real cloud:
  # guests reach Nova's metadata API on the host, which finds the server by the request's source (fixed) IP
  local meta="-i $BRIDGE -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination $API_IP:$METADATA_PORT"
  # shellcheck disable=SC2086
  iptables -t nat -C PREROUTING $meta 2>/dev/null || iptables -t nat -I PREROUTING $meta
  local rule
  for rule in "-i $BRIDGE ! -o $BRIDGE" "! -i $BRIDGE -o $BRIDGE"; do
    # shellcheck disable=SC2086
    iptables -C FORWARD $rule -j DROP 2>/dev/null || iptables -I FORWARD $rule -j DROP
  done
}

guests_down() {  # every guest the virt driver started: kill its PID namespace, unmount its root, drop its netns
  local d pid child
  for d in "$STATE"/data/nova/instances/*/; do
    [ -f "$d/pid" ] || continue
    pid=$(cat "$d/pid")
    grep -qa systemd-nspawn "/proc/$pid/cmdline" 2>/dev/null || continue
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do kill -9 "$child" 2>/dev/null || true; done
    kill -9 "$pid" 2>/dev/null || true
  done
  for d in "$STATE"/data/nova/instances/*/root; do
    [ -d "$d" ] && mountpoint -q "$d" && umount -l "$d"
  done
  ip -o netns list 2>/dev/null | awk '$1 ~ /^mg-/ {print $1}' | xargs -r -n1 ip netns del 2>/dev/null || true
  ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | xargs -r -n1 ip link del \
    2>/dev/null || true
  rm -rf "$STATE"/data/nova/instances/*-*-*-*-*
}

gunicorn_start() { # name port module workers env...
  local name=$1 port=$2 module=$3 workers=$4; shift 4
  env OS_WSGI_MODULE="$module" "$@" setsid "$VENV/bin/gunicorn" --chdir "$STATE/etc" --no-control-socket \
    --bind "127.0.0.1:$port" --bind "$API_IP:$port" --workers "$workers" --threads 8 --worker-class gthread --timeout 300 \
    --pid "$STATE/run/$name.pid" --name "$name" wsgi_shim:application \
    > "$STATE/logs/$name-gunicorn.log" 2>&1 < /dev/null &
}

daemon_start() { # name command...
  local name=$1; shift
  setsid "$@" > "$STATE/logs/$name.out" 2>&1 < /dev/null &
  echo $! > "$STATE/run/$name.pid"
}

print_env() {
  echo "export OS_CLIENT_CONFIG_FILE=$STATE/clouds.yaml"
  echo "export OS_CLOUD=demo"
  echo "export MAREA_WHEELHOUSE_URL=http://$API_IP:$WHEEL_PORT/"
}

alive_daemons() {  # the names of the daemons whose pid file names a live process, each after a space
  local f
  for f in "$STATE"/run/*.pid; do
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && printf ' %s' "$(basename "$f" .pid)"
  done
  return 0
}

cmd_start() {
  [ -x "$VENV/bin/nova-compute" ] || die "not installed: run '$0 install' first"
  export PATH="$VENV/bin:$PATH"
  local alive; alive=$(alive_daemons)
  [ -z "$alive" ] || die "already running or partly up (alive:$alive; state $STATE); run '$0 stop' first"
  rm -f "$STATE"/run/*.pid  # stale: no process of theirs is alive
  local first=0; [ -f "$STATE/golden.sql" ] || first=1
  network_up
  guests_down
  # Nova loads a driver only from its own namespace: a one-line module there imports this checkout's driver
  printf 'import sys\nsys.path.insert(0, %s)\nfrom marea_guestvirt.driver import GuestDriver  # noqa\n' \
    "'$HERE/guestvirt'" > "$("$VENV/bin/python" -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')/marea_guests.py"
  mkdir -p "$STATE"/etc/{keystone,nova,placement,glance,neutron/plugins/ml2} "$STATE"/{logs,run,mysql,rabbitmq} \
           "$STATE"/data/{nova/instances,nova/lock,neutron/lock,images,glance-staging,glance-tasks,glance-cache}
  render "$HERE/conf/keystone.conf" "$STATE/etc/keystone/keystone.conf"
  render "$HERE/conf/placement.conf" "$STATE/etc/placement/placement.conf"
  render "$HERE/conf/glance-api.conf" "$STATE/etc/glance/glance-api.conf"
  render "$HERE/conf/nova.conf" "$STATE/etc/nova/nova.conf"
  render "$HERE/conf/neutron.conf" "$STATE/etc/neutron/neutron.conf"
  render "$HERE/conf/my.cnf" "$STATE/etc/my.cnf"
  cp "$HERE/conf/ml2_conf.ini" "$STATE/etc/neutron/plugins/ml2/ml2_conf.ini"
  cp "$HERE/conf/wsgi_shim.py" "$STATE/etc/"
  printf '[DEFAULT]\nlog_file = %s/logs/nova-api.log\n' "$STATE" > "$STATE/etc/nova/nova-api.conf"
  cp "$VENV/etc/nova/api-paste.ini" "$STATE/etc/nova/"
  cp "$VENV/etc/glance/glance-api-paste.ini" "$STATE/etc/glance/"
  cp "$VENV/etc/neutron/api-paste.ini" "$STATE/etc/neutron/"
  printf 'listeners.tcp.default = 127.0.0.1:5672\nloopback_users = none\nlog.file.level = warning\n' \
    > "$STATE/rabbitmq/rabbitmq.conf"
  echo '[].' > "$STATE/rabbitmq/plugins"

  rm -rf "$STATE/rabbitmq/mnesia"  # fresh queues every start, so a killed broker leaves nothing behind
  ( rabbit_env
    setsid /usr/bin/epmd -address 127.0.0.1 -port 4369 > "$STATE/logs/epmd.out" 2>&1 < /dev/null &
    echo $! > "$STATE/run/epmd.pid"
    sleep 0.3
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached )
  # a fresh database every start: the fake driver keeps its servers in memory, so old rows would lie
  rm -rf "$STATE/mysql"; mkdir -p "$STATE/mysql"
  mariadb-install-db --defaults-file="$STATE/etc/my.cnf" --auth-root-authentication-method=socket \
    --skip-test-db > "$STATE/logs/mysql-install.log" 2>&1
  daemon_start mariadb mariadbd --defaults-file="$STATE/etc/my.cnf"
  local i
  for i in $(seq 1 150); do sql -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  sql -e 'select 1' >/dev/null || die "mariadb did not start (see $STATE/logs/mysqld.log)"
  ( rabbit_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q wait --timeout 120 "$RABBITMQ_PID_FILE" ) \
    || die "rabbitmq did not start"
  log "rabbitmq and mariadb up"
  sql <<'SQL'
CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY 'secret';
GRANT ALL PRIVILEGES ON *.* TO 'os'@'127.0.0.1';
SQL

  local KC="--config-file $STATE/etc/keystone/keystone.conf" NC="--config-file $STATE/etc/nova/nova.conf"
  local p1 p2 p3 p4
  if [ $first = 0 ]; then
    sql < "$STATE/golden.sql"
    log "databases restored from the first start's snapshot"
  else
    sql -e 'CREATE DATABASE keystone; CREATE DATABASE placement; CREATE DATABASE glance;
            CREATE DATABASE neutron; CREATE DATABASE nova_api; CREATE DATABASE nova_cell0; CREATE DATABASE nova;'
    ( keystone-manage $KC db_sync
      keystone-manage $KC fernet_setup --keystone-user root --keystone-group root
      keystone-manage $KC credential_setup --keystone-user root --keystone-group root
      keystone-manage $KC bootstrap --bootstrap-password secret --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "http://$API_IP:5000/v3/" --bootstrap-internal-url "http://$API_IP:5000/v3/" \
        --bootstrap-public-url "http://$API_IP:5000/v3/" ) > "$STATE/logs/init-keystone.log" 2>&1 & p1=$!
    ( placement-manage --config-file "$STATE/etc/placement/placement.conf" db sync
      glance-manage --config-file "$STATE/etc/glance/glance-api.conf" db_sync ) \
      > "$STATE/logs/init-placement-glance.log" 2>&1 & p2=$!
    neutron-db-manage --config-file "$STATE/etc/neutron/neutron.conf" \
      --config-file "$STATE/etc/neutron/plugins/ml2/ml2_conf.ini" upgrade heads \
      > "$STATE/logs/init-neutron.log" 2>&1 & p3=$!
    ( nova-manage $NC api_db sync
      nova-manage $NC cell_v2 map_cell0 --database_connection "mysql+pymysql://os:secret@127.0.0.1:3306/nova_cell0?charset=utf8"
      nova-manage $NC cell_v2 create_cell --name cell1
      nova-manage $NC db sync ) > "$STATE/logs/init-nova.log" 2>&1 & p4=$!
    wait $p1 || die "keystone init failed (see $STATE/logs/init-keystone.log)"
  fi

  gunicorn_start keystone 5000 keystone.wsgi.api 1 OS_KEYSTONE_CONFIG_DIR="$STATE/etc/keystone"
  wait_http http://127.0.0.1:5000/v3 120
  log "keystone up"
  if [ $first = 1 ]; then
    python "$HERE/bootstrap.py" catalog "$STATE"
    wait $p2 || die "placement/glance init failed"
    wait $p3 || die "neutron init failed"
    wait $p4 || die "nova init failed"
    log "catalog and schemas ready"
  fi
  gunicorn_start placement 8778 placement.wsgi.api 1 OS_PLACEMENT_CONFIG_DIR="$STATE/etc/placement"
  gunicorn_start glance 9292 glance.wsgi.api 1 OS_GLANCE_CONFIG_DIR="$STATE/etc/glance"
  # one process each: with two neutron processes, Nova's network checks sometimes got 404 for a network
  # that exists (seen under 50 parallel creates)
  gunicorn_start neutron 9696 neutron.wsgi.api 1 OS_NEUTRON_CONFIG_DIR="$STATE/etc/neutron"
  gunicorn_start nova-api 8774 nova.wsgi.osapi_compute 1 OS_NOVA_CONFIG_DIR="$STATE/etc/nova" \
    "OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf;nova-api.conf"
  # Nova's metadata API (guests reach it at 169.254.169.254, network_up's DNAT), as every cloud has beside the
  # config drive: marea's user-data must be safe from jobs that ask it for the user-data
  gunicorn_start nova-metadata "$METADATA_PORT" nova.wsgi.metadata 1 OS_NOVA_CONFIG_DIR="$STATE/etc/nova" \
    "OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf;nova-api.conf"
  daemon_start nova-conductor nova-conductor $NC
  daemon_start nova-scheduler nova-scheduler $NC
  local port
  for port in 8778 9292 9696 8774 "$METADATA_PORT"; do wait_http "http://127.0.0.1:$port/" 120; done
  log "placement, glance, neutron, nova-api up"
  if [ $first = 1 ]; then
    python "$HERE/bootstrap.py" content "$STATE"
    # the guest images go into the snapshot too, so later starts do not upload them again
    [ -f "$GUEST_BASE/batch.tar" ] && python "$HERE/bootstrap.py" guest-images "$GUEST_BASE"
    mariadb-dump --defaults-file="$STATE/etc/my.cnf" -uroot --single-transaction --add-drop-database \
      --databases keystone placement glance neutron nova_api nova_cell0 nova > "$STATE/golden.sql.tmp"
    mv "$STATE/golden.sql.tmp" "$STATE/golden.sql"
    log "image, flavours, networks created; snapshot saved"
  fi
  for i in $(seq 1 "$COMPUTES"); do
    printf '[DEFAULT]\nhost = marea-fake-%s\nlog_file = %s/logs/nova-compute-%s.log\n' "$i" "$STATE" "$i" \
      > "$STATE/etc/nova/nova-compute-$i.conf"
    daemon_start "nova-compute-$i" nova-compute $NC --config-file "$STATE/etc/nova/nova-compute-$i.conf"
  done
  python "$HERE/bootstrap.py" computes "$COMPUTES"
  nova-manage $NC cell_v2 discover_hosts > "$STATE/logs/discover-hosts.log" 2>&1
  if [ -f "$GUEST_BASE/batch.tar" ]; then
    python "$HERE/bootstrap.py" guest-images "$GUEST_BASE"   # a no-op when the snapshot holds these images
    log "guest images in Glance"
  else
    log "no guest images ($GUEST_BASE): run 'testbeds/guests.sh install' for servers that boot"
  fi
  daemon_start l3agent python "$HERE/l3agent.py"
  mkdir -p "$STATE/wheelhouse"
  daemon_start wheelhouse python -m http.server --bind "$API_IP" --directory "$STATE/wheelhouse" "$WHEEL_PORT"
  log "OpenStack ready"
  print_env
}

cmd_stop() {
  # every process at once: SIGTERM, 5 s of grace, then SIGKILL
  local f pid pids=() i alive
  for f in "$STATE"/run/*.pid; do
    [ -f "$f" ] && pid=$(cat "$f") && [ -n "$pid" ] && pids+=("$pid")
  done
  # each daemon was started with setsid: signal its whole process group (workers included)
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  # nothing here is worth a slow graceful shutdown: every start begins from fresh databases and queues
  for pid in "${pids[@]}"; do kill -9 -- "-$pid" 2>/dev/null || true; kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$STATE"/run/*.pid
  guests_down
  iptables -t nat -F MAREA-FIP 2>/dev/null || true
  log "stopped"
}

cmd_status() {
  local f pid rc=0
  for f in "$STATE"/run/*.pid; do
    [ -f "$f" ] || { echo "not running"; return 1; }
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then echo "$(basename "$f" .pid): running ($pid)"
    elif [ "$(basename "$f")" = epmd.pid ]; then echo "epmd: not ours (another epmd serves the port)"
    else echo "$(basename "$f" .pid): DEAD"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) print_env ;;
  reset) cmd_stop; rm -rf "$STATE" ;;
  *) echo "usage: $0 install|start|stop|status|env|reset" >&2; exit 2 ;;
esac
