#!/usr/bin/env bash
# A real single-node Slurm cluster (with accounting) on this machine, for tests and trying things.
#
#   scripts/slurm_local.sh start  [STATE_DIR]   install what is missing, configure, start, wait
#   scripts/slurm_local.sh status [STATE_DIR]   which daemons run; sinfo
#   scripts/slurm_local.sh stop   [STATE_DIR]   cancel jobs, stop the daemons by their process ids
#
# STATE_DIR (default $IMBAL_SLURM_DIR, else /tmp/imbal-slurm) holds everything: slurm.conf,
# slurmdbd.conf, the MariaDB data, state, spool, logs and the daemons' process ids. Clients find
# the cluster through SLURM_CONF: after `start`, run `. STATE_DIR/env` (or export
# SLURM_CONF=STATE_DIR/etc/slurm.conf) before sinfo, sbatch, sacct or `imbal sweep --executor
# slurm`.
#
# Needs root and apt-get on Debian 12 (bookworm) for the install (slurmctld, slurmd, slurm-client,
# munge, slurmdbd, mariadb-server); no systemd: the script starts munged, MariaDB, slurmdbd,
# slurmctld and slurmd itself, each in the foreground mode in the background, and keeps their
# process ids in STATE_DIR/pids/. Idempotent: `start` on a running cluster says so and returns 0.
# Exit status: 0 on success, 1 when something failed (the reason is printed, with the log to read).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CLUSTER=imbal
DB_PORT=${IMBAL_SLURM_DB_PORT:-3399}     # MariaDB, TCP on 127.0.0.1 only
DAEMONS=(munged mysqld slurmdbd slurmctld slurmd)  # start order; stopped in reverse

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: ERROR: $*" >&2; exit 1; }

cmd=${1:-}
STATE=${2:-${IMBAL_SLURM_DIR:-/tmp/imbal-slurm}}
case "$cmd" in start|stop|status) ;; *) echo "usage: $0 start|stop|status [STATE_DIR]" >&2; exit 2;; esac
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
export SLURM_CONF=$STATE/etc/slurm.conf
PIDS=$STATE/pids
LOG=$STATE/log

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# ---------------------------------------------------------------- stop / status

stop_one() {  # TERM, wait up to 15 s (slurmctld takes ~3 s), then KILL
  local name=$1 p
  p=$(pid_of "$name")
  if [ -z "$p" ]; then return 0; fi
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then say "$name ($p) ignored SIGTERM; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
    say "stopped $name (pid $p)"
  fi
  rm -f "$PIDS/$name.pid"
}

do_stop() {
  if alive slurmctld; then  # jobs first, so no slurmstepd outlives slurmd
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  local i
  for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do stop_one "${DAEMONS[$i]}"; done
}

do_status() {
  local name up=0
  for name in "${DAEMONS[@]}"; do
    if alive "$name"; then say "$name running (pid $(pid_of "$name"))"; up=$((up+1));
    else say "$name not running"; fi
  done
  [ "$up" -eq ${#DAEMONS[@]} ] || return 1
  timeout 10 sinfo -N -o "%N %T %c %m" || return 1
}

# ---------------------------------------------------------------- start

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "packages already installed"; return 0; fi
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
  say "installing ${missing[*]} (apt-get; log $LOG/apt.log)"
  local t0=$SECONDS
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${missing[@]}"; } >"$LOG/apt.log" 2>&1 \
    || { tail -n 20 "$LOG/apt.log" >&2; die "apt-get failed (log: $LOG/apt.log)"; }
  say "installed in $((SECONDS - t0)) s"
}

spawn() {  # spawn NAME LOGFILE CMD...: the command in its own session, its pid in pids/NAME.pid
  local name=$1 logfile=$2; shift 2
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  echo $! >"$PIDS/$name.pid"
  sleep 0.3
  alive "$name" || { tail -n 20 "$logfile" >&2; die "$name exited at once (log: $logfile)"; }
}

wait_for() {  # wait_for WHAT SECONDS CMD...: poll CMD every 0.2 s
  local what=$1 limit=$2; shift 2
  local n=$((limit * 5))
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what not ready after ${limit} s (logs: $LOG)"
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || { say "creating /etc/munge/munge.key"; mungekey --create --keyfile=/etc/munge/munge.key; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  if (munge -n | unmunge) >/dev/null 2>&1 && ! alive munged; then
    say "a munged is already serving /run/munge; using it"; return 0
  fi
  rm -f /run/munge/munged.pid  # a stale one from a killed munged stops it from starting
  spawn munged "$LOG/munged.log" setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --force
  wait_for munged 10 sh -c 'munge -n | unmunge'
}

start_mariadb() {
  local data=$STATE/mysql sock=$STATE/mysql/mysqld.sock
  install -d -o mysql -g mysql -m 0750 "$data"
  if [ ! -d "$data/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$data" --skip-test-db \
      --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (log: $LOG/mariadb-install.log)"
  fi
  local server; server=$(command -v mariadbd || command -v mysqld || echo /usr/sbin/mariadbd)
  spawn mysqld "$LOG/mariadb.log" "$server" --no-defaults --user=mysql --datadir="$data" \
    --socket="$sock" --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$data/mysqld.pid" \
    --log-error="$LOG/mariadb.log" --innodb-buffer-pool-size=32M --innodb-log-file-size=8M
  wait_for MariaDB 30 mariadb --no-defaults --socket="$sock" -u root -e "SELECT 1"
  local pass; pass=$(sed -n 's/^StoragePass=//p' "$STATE/etc/slurmdbd.conf")
  mariadb --no-defaults --socket="$sock" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

write_configs() {
  local host node pass
  host=$(hostname -s)
  node=$(slurmd -C | head -n 1)  # NodeName=... CPUs=... Boards=... CoresPerSocket=... RealMemory=...
  case "$node" in NodeName=*) ;; *) die "slurmd -C did not describe this node: $node";; esac
  mkdir -p "$STATE/etc"
  cat >"$STATE/etc/slurm.conf" <<EOF
# One-node cluster written by scripts/slurm_local.sh
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MinJobAge=30
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$STATE/etc/slurmdbd.conf" ]; then
    pass=$(sed -n 's/^StoragePass=//p' "$STATE/etc/slurmdbd.conf")
  else
    pass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  fi
  (umask 077; cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Accounting daemon written by scripts/slurm_local.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$STATE/etc/slurmdbd.conf"
}

node_idle() { timeout 5 sinfo -h -N -o %T 2>/dev/null | grep -qx idle; }

do_start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (SlurmUser=root, apt-get, munge key); running as $(id -un)"
  mkdir -p "$LOG" "$PIDS" "$STATE/ctld" "$STATE/spool" "$STATE/run"
  chmod 755 "$STATE"
  local all=1 name
  for name in "${DAEMONS[@]}"; do alive "$name" || all=0; done
  if [ "$all" -eq 1 ] && node_idle; then
    say "already running (state $STATE)"; echo "export SLURM_CONF=$SLURM_CONF"; return 0
  fi
  do_stop >/dev/null  # whatever half of it runs
  local port
  for port in 6817 6818 6819 "$DB_PORT"; do  # slurmctld, slurmd, slurmdbd, MariaDB
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is in use (another Slurm or MariaDB running? \`$0 stop DIR\` for a cluster this script started in DIR)"
    fi
  done
  install_packages
  local t0=$SECONDS
  write_configs
  echo "export SLURM_CONF=$SLURM_CONF" >"$STATE/env"
  start_munge
  start_mariadb
  spawn slurmdbd "$LOG/slurmdbd.out" slurmdbd -D
  wait_for slurmdbd 30 sacctmgr -n list cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not register cluster $CLUSTER"
  fi
  spawn slurmctld "$LOG/slurmctld.out" slurmctld -D
  spawn slurmd "$LOG/slurmd.out" slurmd -D
  wait_for "node $(hostname -s) idle" 60 node_idle
  timeout 10 sacct -n -X -S now >/dev/null || die "sacct does not work (logs: $LOG)"
  say "up in $((SECONDS - t0)) s: cluster $CLUSTER, $(sinfo -h -N -o '%N %c CPUs %m MB %T')"
  say "clients need: export SLURM_CONF=$SLURM_CONF   (or: . $STATE/env)"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop; say "stopped (state kept in $STATE)" ;;
  status) do_status ;;
esac
