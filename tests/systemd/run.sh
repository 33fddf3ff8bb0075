#!/usr/bin/env bash
# Tests weft's Debian package under a real systemd: four Debian bookworm containers booted with
# systemd-nspawn (systemd as PID 1), each with a veth into a bridge that lives in a network
# namespace created here (nothing is routed to the host's network). Then a small fleet:
# a CA replica is added, the bootstrap container is destroyed, the others keep serving
# and renewing, and a fourth container joins with a token of the replica.
#
# Works on hosts whose PID 1 is not systemd (and on cgroup v1/hybrid hosts): nspawn runs
# with --register=no --keep-unit inside a cgroup this script creates, and commands reach
# the container's systemd through `nsenter -t <container PID 1> -a`.
#
# Usage (as root):  tests/systemd/run.sh
# The package (node/dist/package-deb.sh) is installed with dpkg -i into each container: the
# unit, the `weft` user it runs as, the conffile, completions and man page come from it.
# Environment:
#   WEFT_DEB          the .deb to install      (default: built from WEFT_BIN)
#   WEFT_BIN          weft binary to package   (default: <repo>/target/debug/weft)
#   WEFT_ROOT_CACHE   cached bookworm root     (default: /var/cache/weft-test/bookworm-root)
#   DEBIAN_MIRROR     debootstrap mirror       (default: the host's first apt source whose
#                                              suite is bookworm)
#   WEFT_TEST_KEEP=1  keep containers and the work dir on failure (for debugging)
# Needs: systemd-container, debootstrap, iproute2, util-linux (nsenter), jq, cargo-deb.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WEFT_BIN=${WEFT_BIN:-$REPO/target/debug/weft}
WEFT_DEB=${WEFT_DEB:-}
ROOT_CACHE=${WEFT_ROOT_CACHE:-/var/cache/weft-test/bookworm-root}
# The host's own Debian mirror, as apt is configured (deb822 .sources or sources.list).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u !~ /security/ {print u; exit}' "$f"
  done | head -n 1
  awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror | head -n 1)}
KEEP=${WEFT_TEST_KEEP:-0}
PACKAGES="systemd,systemd-sysv,dbus,iproute2,procps,systemd-resolved"
STAMP_TEXT="weft-test bookworm minbase +$PACKAGES v1"

ID="wt$$"                      # unique per run: netns, machine and cgroup names
SUBNET=192.168.77              # only inside this script's own network namespaces
declare -A IP=([1]=$SUBNET.1 [2]=$SUBNET.2 [3]=$SUBNET.3 [4]=$SUBNET.4)
NODES="1 2 3 4"
SWITCH=""                      # the namespace holding the bridge
NSPAWN_PID=() LEADER=() NETNS=()
CGROUPS=()
WORK=""
FAILURES=0
START=$SECONDS

log()  { printf '[%3ds] %s\n' $((SECONDS - START)) "$*"; }
pass() { printf '[%3ds] PASS: %s\n' $((SECONDS - START)) "$*"; }
fail() { printf '[%3ds] FAIL: %s\n' $((SECONDS - START)) "$*"; FAILURES=$((FAILURES + 1)); }
# A failed check that later steps depend on: report and stop (the trap cleans up).
fatal() { fail "$*"; exit 1; }
check() { # check "description" command...
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; return 1; fi
}

# Runs a command inside container N: all its namespaces, a clean environment.
cx() {
  local n=$1; shift
  nsenter -t "${LEADER[$n]}" -a env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb "$@"
}
unit_prop() { cx "$1" systemctl show -P "$2" weft.service; }   # unit_prop N Property
weft_log()  { cx "$1" journalctl -q -u weft.service -o cat --no-pager; }
count_log() { weft_log "$1" | grep -c -F -- "$2"; }             # count_log N "text"
members()   { cx "$1" weft members --json 2>/dev/null; }
status_of() { members "$1" | jq -r --arg n "$2" '.[] | select(.name == $n) | .status'; }

# wait_for SECONDS description command... : polls every 0.5 s.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    "$@" && { pass "$what"; return 0; }
    sleep 0.5
  done
  fail "$what (timeout ${limit}s)"
  return 1
}

# ---------------------------------------------------------------------------- cleanup
dump_diagnostics() {
  local n
  for n in $NODES; do
    [ -n "${LEADER[$n]:-}" ] && [ -d "/proc/${LEADER[$n]}" ] || continue
    echo "----- container c$n: systemctl status weft"
    cx "$n" systemctl status --no-pager -l weft.service 2>&1 | tail -n 20
    echo "----- container c$n: journalctl (weft and systemd about weft), last 60 lines"
    cx "$n" journalctl -q --no-pager -u weft.service -n 60 2>&1
  done
  for n in $NODES; do
    [ -f "$WORK/c$n.console" ] || continue
    echo "----- container c$n: console, last 15 lines"
    tail -n 15 "$WORK/c$n.console" | sed 's/\x1b\[[0-9;]*m//g'
  done
}

stop_container() {
  local n=$1 pid=${NSPAWN_PID[$1]:-} i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null            # nspawn -b: orderly poweroff of the container
  for i in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "container c$n did not power off in 40 s; killing it"
  [ -n "${LEADER[$n]:-}" ] && kill -KILL "${LEADER[$n]}" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
  for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
}

remove_cgroup() { # depth-first rmdir; the container's systemd leaves empty sub-cgroups
  local dir=$1 i
  [ -d "$dir" ] || return 0
  for i in 1 2 3 4 5; do
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$dir" ] || return 0
    sleep 0.5
  done
  log "warning: could not remove cgroup $dir"
}

cleanup() {
  local rc=$? n cg m alive=0
  trap - EXIT INT TERM
  ((rc != 0 || FAILURES > 0)) && [ -n "$WORK" ] && dump_diagnostics
  if [ "$KEEP" = 1 ] && ((rc != 0 || FAILURES > 0)); then
    log "WEFT_TEST_KEEP=1: leaving containers (nspawn pids ${NSPAWN_PID[*]:-}), netns ${NETNS[*]:-}, $WORK"
    exit 1
  fi
  for n in $NODES; do stop_container "$n" & done
  wait
  for n in $NODES; do
    [ -n "${NSPAWN_PID[$n]:-}" ] && kill -0 "${NSPAWN_PID[$n]}" 2>/dev/null && alive=1
  done
  for cg in "${CGROUPS[@]}"; do remove_cgroup "$cg"; done
  for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done   # frees the veths
  [ -n "$SWITCH" ] && ip netns del "$SWITCH" 2>/dev/null
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    # Nothing should be mounted there (nspawn mounts in its own namespace); be safe anyway.
    for m in $(awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r); do
      umount -l "$m" 2>/dev/null
    done
    if ((alive)); then
      log "warning: a container is still running; not removing $WORK"
    else
      rm -rf --one-file-system "$WORK"
    fi
  fi
  for n in $NODES; do rm -rf "/run/systemd/nspawn/propagate/weft-$ID-c$n" 2>/dev/null; done
  if ((rc == 0 && FAILURES == 0)); then
    log "ALL PASSED in $((SECONDS - START)) s"
    exit 0
  fi
  log "FAILED ($FAILURES failed checks) after $((SECONDS - START)) s"
  exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------- preflight
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
for tool in systemd-nspawn debootstrap nsenter ip jq; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (tests/install-deps.sh)" >&2; exit 2; }
done
if [ -z "$WEFT_DEB" ]; then
  [ -x "$WEFT_BIN" ] || fatal "weft binary $WEFT_BIN exists (build it first, or set WEFT_BIN or WEFT_DEB)"
  DEB_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/weft-deb.XXXXXX")
  if WEFT_DEB=$(bash "$REPO/node/dist/package-deb.sh" --binary "$WEFT_BIN" --out "$DEB_DIR" 2>"$DEB_DIR/err"); then
    pass "package built from $WEFT_BIN: $(basename "$WEFT_DEB")"
  else
    cat "$DEB_DIR/err"; fatal "node/dist/package-deb.sh"
  fi
fi
[ -f "$WEFT_DEB" ] || fatal "package $WEFT_DEB exists"
log "package: $WEFT_DEB; run id: $ID"

# ---------------------------------------------------------------------------- 1. root
build_root() {
  local tmp="$ROOT_CACHE.tmp.$$" u
  log "building the Debian bookworm root in $ROOT_CACHE (debootstrap, ~1 min)"
  rm -rf "$tmp"
  if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp" "$MIRROR" \
      >"$ROOT_CACHE.debootstrap.log" 2>&1; then
    tail -n 20 "$ROOT_CACHE.debootstrap.log"
    rm -rf "$tmp"
    return 1
  fi
  # Quiet, fast boots: no timers doing background work, no login prompt on the console.
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
      fstrim.timer console-getty.service getty@.service; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$u"
  done
  rm -f "$tmp/etc/hostname"                 # set per container
  : >"$tmp/etc/machine-id"                   # a fresh one each boot
  echo "$STAMP_TEXT" >"$tmp/.weft-test-stamp"
  rm -rf "$ROOT_CACHE"
  mv "$tmp" "$ROOT_CACHE"
}
mkdir -p "$(dirname "$ROOT_CACHE")"
exec 9>"$ROOT_CACHE.lock"
flock 9
if [ "$(cat "$ROOT_CACHE/.weft-test-stamp" 2>/dev/null)" = "$STAMP_TEXT" ]; then
  pass "cached Debian root $ROOT_CACHE reused"
else
  build_root || fatal "debootstrap of the bookworm root (log: $ROOT_CACHE.debootstrap.log)"
  pass "Debian root built in $ROOT_CACHE"
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/weft-systemd.XXXXXX")
for n in $NODES; do
  cp -a "$ROOT_CACHE" "$WORK/c$n" || fatal "copy of the root for c$n"
  R=$WORK/c$n
  echo "c$n" >"$R/etc/hostname"
  cp "$WEFT_DEB" "$R/root/weft.deb"
done
exec 9>&-
pass "container roots prepared in $WORK"

# ---------------------------------------------------------------------------- 2. boot
SWITCH="weft-$ID-sw"
ip netns add "$SWITCH" || fatal "ip netns add (switch)"
ip -n "$SWITCH" link add br0 type bridge || fatal "bridge"
ip -n "$SWITCH" link set br0 up
for n in $NODES; do
  NETNS[$n]="weft-$ID-$n"
  ip netns add "${NETNS[$n]}" || fatal "ip netns add"
  # Both veth ends are created directly inside our namespaces: nothing touches the host's.
  ip -n "$SWITCH" link add "p$n" type veth peer name wv0 netns "${NETNS[$n]}" || fatal "veth for c$n"
  ip -n "$SWITCH" link set "p$n" master br0
  ip -n "$SWITCH" link set "p$n" up
  ip -n "${NETNS[$n]}" link set lo up
  ip -n "${NETNS[$n]}" addr add "${IP[$n]}/24" dev wv0
  ip -n "${NETNS[$n]}" link set wv0 up
done
pass "network namespaces ${NETNS[*]} joined by a bridge (${IP[1]} .. ${IP[4]})"

PID1=$(cat /proc/1/comm)
start_container() {
  local n=$1 machine="weft-$ID-c$n" h cg
  local args=(systemd-nspawn --quiet --boot --directory="$WORK/c$n" --machine="$machine"
    --register=no --keep-unit --settings=no --private-users=no --link-journal=no
    --resolv-conf=off --timezone=off --console=read-only
    --network-namespace-path="/run/netns/${NETNS[$n]}")
  if [ "$PID1" = systemd ]; then
    # (Untested here.) On a systemd host, give each container its own scope.
    systemd-run --scope --quiet --unit="$machine" "${args[@]}" >"$WORK/c$n.console" 2>&1 &
  else
    # No systemd on the host: --keep-unit makes nspawn use the cgroup it starts in, so each
    # container gets its own cgroup (else both would share /payload and collide).
    local dirs=()
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
      case $(stat -f -c %T "$h" 2>/dev/null) in cgroupfs|cgroup2fs) ;; *) continue ;; esac
      [ "$h" = /sys/fs/cgroup ] && ((${#dirs[@]})) && continue   # hybrid: done above
      cg="$h/weft-test-$machine"
      mkdir -p "$cg" && dirs+=("$cg") && CGROUPS+=("$cg")
    done
    (
      for cg in "${dirs[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
      exec setsid "${args[@]}"
    ) >"$WORK/c$n.console" 2>&1 &
  fi
  NSPAWN_PID[$n]=$!
}
find_leader() { # container PID 1 = nspawn's child whose innermost PID is 1 and runs systemd
  local n=$1 c
  for c in $(pgrep -P "${NSPAWN_PID[$n]}"); do
    [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] || continue
    [ "$(awk '/^NSpid:/ { print $NF }' "/proc/$c/status" 2>/dev/null)" = 1 ] || continue
    LEADER[$n]=$c
    return 0
  done
  return 1
}
booted() { # container N's systemd answers and finished booting
  local n=$1 state
  find_leader "$n" || return 1
  state=$(timeout 10 nsenter -t "${LEADER[$n]}" -a env -i PATH=/usr/bin:/bin \
    systemctl is-system-running 2>/dev/null)
  case $state in running|degraded) return 0 ;; *) return 1 ;; esac
}

for n in $NODES; do start_container "$n"; done
for n in $NODES; do
  if ! wait_for 90 "container c$n booted systemd as PID 1 (systemd-nspawn -b)" booted "$n"; then
    kill -0 "${NSPAWN_PID[$n]}" 2>/dev/null || log "systemd-nspawn for c$n exited"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/c$n.console" | tail -n 30
    exit 1
  fi
  state=$(cx "$n" systemctl is-system-running)
  [ "$state" = running ] || log "c$n is $state; failed units: $(cx "$n" systemctl --failed --plain --no-legend | awk '{print $1}' | xargs)"
done
for n in $NODES; do
  check "c$n sees its veth address ${IP[$n]}" \
    bash -c "ip -n '${NETNS[$n]}' -br addr show wv0 | grep -q -F '${IP[$n]}/24'" || exit 1
done

# ---------------------------------------------------------------------------- 2b. package
for n in $NODES; do
  if cx "$n" dpkg -i /root/weft.deb >"$WORK/dpkg$n.out" 2>&1; then
    pass "c$n: dpkg -i weft.deb"
  else
    cat "$WORK/dpkg$n.out"; fatal "c$n: dpkg -i weft.deb"
  fi
done
check "c1: the package made the weft system user" cx 1 getent passwd weft
not_started() { [ "$(cx 1 systemctl is-enabled weft.service)" = disabled ] && ! cx 1 systemctl is-active -q weft.service; }
check "c1: the package neither enabled nor started the agent" not_started
version=$(cx 1 weft --version)
check "c1: weft --version names the commit ($version)" grep -q "(commit " <<<"$version"
check "c1: completions, man page and conffile installed" \
  cx 1 test -s /usr/share/bash-completion/completions/weft -a -s /usr/share/man/man1/weft.1.gz -a -s /etc/weft/weft.toml

# ---------------------------------------------------------------------------- 3. first node
cat >"$WORK/c1/etc/weft/weft.toml" <<EOF
name = "c1"
bind = "${IP[1]}"
advertise = "${IP[1]}"
bootstrap = true
leaf_ttl = "30s"
EOF
cx 1 systemctl daemon-reload
check "unit is Type=notify (systemctl show)" test "$(unit_prop 1 Type)" = notify
if cx 1 timeout 90 systemctl start weft.service; then
  pass "c1: systemctl start weft returned success"
else
  fatal "c1: systemctl start weft"
fi
check "c1: weft is active/running" \
  test "$(unit_prop 1 ActiveState)/$(unit_prop 1 SubState)" = active/running
# Type=notify: the unit became active only after the agent said READY=1 (it logs
# "agent ready" right before sd_notify). Compare monotonic timestamps (µs). The journal
# stamps the log line when it receives it over the stderr pipe, which can land a few
# hundred µs after systemd has already handled READY=1 on the notify socket, so allow
# 20 ms of slack: a unit that went active at exec (Type=simple) would still fail, since
# the agent takes ~100 ms to get ready.
ready_at=$(cx 1 journalctl -q -u weft.service -o json --no-pager | jq -r \
  'select((.MESSAGE | type) == "string" and (.MESSAGE | contains("agent ready"))) | .__MONOTONIC_TIMESTAMP' | head -n 1)
active_at=$(unit_prop 1 ActiveEnterTimestampMonotonic)
started_at=$(unit_prop 1 ExecMainStartTimestampMonotonic)
if [ -n "$ready_at" ] && ((started_at <= ready_at && ready_at <= active_at + 20000 && active_at - started_at >= 20000)); then
  pass "c1: active only after READY (exec +$(((ready_at - started_at) / 1000)) ms -> 'agent ready'; active at exec +$(((active_at - started_at) / 1000)) ms)"
else
  fail "c1: activation order (exec=$started_at ready=${ready_at:-none} active=$active_at)"
fi
mainpid=$(unit_prop 1 MainPID)
status=$(cx 1 cat "/proc/$mainpid/status")
check "c1: hardening applied to the agent (NoNewPrivs, seccomp filter, no capabilities)" \
  bash -c 'grep -q "^NoNewPrivs:[[:space:]]*1" <<<"$1" && grep -q "^Seccomp:[[:space:]]*2" <<<"$1" &&
           grep -q "^CapEff:[[:space:]]*0000000000000000" <<<"$1"' _ "$status"
weft_uid=$(cx 1 id -u weft)
agent_uid=$(awk '/^Uid:/ { print $2 }' <<<"$status")
check "c1: the agent runs as the weft user (uid $agent_uid), not root" test "$agent_uid" = "$weft_uid"
check "c1: /var/lib/weft belongs to weft" test "$(cx 1 stat -c %U /var/lib/weft/)" = weft

# ---------------------------------------------------------------------------- 4. join
token=$(cx 1 weft token create --ttl 10m 2>"$WORK/token.err" | tail -n 1)
if [ -n "$token" ]; then pass "c1: weft token create"; else cat "$WORK/token.err"; fatal "c1: weft token create"; fi
cat >"$WORK/c2/etc/weft/weft.toml" <<EOF
name = "c2"
bind = "${IP[2]}"
advertise = "${IP[2]}"
join = ["${IP[1]}"]
leaf_ttl = "30s"
EOF
# The token reaches the agent as a systemd credential (LoadCredential=weft:/etc/weft/credentials), not
# through the config, the command line or the environment.
install -m 0600 /dev/null "$WORK/c2/etc/weft/credentials/join-token"
echo "$token" >"$WORK/c2/etc/weft/credentials/join-token"
cx 2 systemctl daemon-reload
if cx 2 timeout 90 systemctl start weft.service; then
  pass "c2: systemctl start weft (join with the token) returned success"
else
  fatal "c2: systemctl start weft"
fi
both_alive() {
  members "$1" | jq -e '[.[] | select(.status == "alive") | .name] | contains(["c1", "c2"])' >/dev/null
}
wait_for 60 "c1 lists c1 and c2 as alive" both_alive 1 || exit 1
wait_for 30 "c2 lists c1 and c2 as alive" both_alive 2

# ---------------------------------------------------------------------------- 5. reload
before=$(count_log 1 "configuration reloaded")
if cx 1 timeout 30 systemctl reload weft.service; then pass "c1: systemctl reload weft"; else fail "c1: systemctl reload weft"; fi
reloaded() { (($(count_log 1 "configuration reloaded") > before)); }
wait_for 10 "c1: journal shows 'configuration reloaded'" reloaded
check "c1: still active after reload" test "$(unit_prop 1 ActiveState)" = active
# A bad file: the reload fails (ExecReload validates it first) and the agent keeps going.
cp "$WORK/c1/etc/weft/weft.toml" "$WORK/c1.toml.good"
printf '[[service]]\nname = "web"\nport = 0\n' >>"$WORK/c1/etc/weft/weft.toml"
reloads_before=$(count_log 1 "configuration reloaded")
if cx 1 timeout 30 systemctl reload weft.service >"$WORK/badreload.out" 2>&1; then
  fail "c1: systemctl reload with a bad file should fail"
else
  pass "c1: systemctl reload with a bad file fails"
fi
names_port() { cx 1 journalctl -q --no-pager -n 40 | grep -q "invalid .port."; }
check "c1: the journal names the bad key (port)" names_port
still_old() { [ "$(count_log 1 "configuration reloaded")" = "$reloads_before" ] && [ "$(unit_prop 1 ActiveState)" = active ]; }
check "c1: no 'configuration reloaded' for the bad file, and still active" still_old
cp "$WORK/c1.toml.good" "$WORK/c1/etc/weft/weft.toml"

# ---------------------------------------------------------------------------- 6. crash
# The token is one-time and already used; it stays in /etc/weft/credentials/join-token, and the
# restart must rejoin from the identity in /var/lib/weft without spending it again.
old_pid=$(unit_prop 2 MainPID)
ready_before=$(count_log 2 "agent ready")
if cx 2 systemctl kill --signal=KILL weft.service; then pass "c2: systemctl kill -s KILL weft"; else fail "c2: systemctl kill -s KILL weft"; fi
restarted() {
  local pid
  pid=$(unit_prop 2 MainPID)
  [ "$(unit_prop 2 NRestarts)" -ge 1 ] && [ "$(unit_prop 2 ActiveState)" = active ] &&
    [ "$pid" != 0 ] && [ "$pid" != "$old_pid" ] && (($(count_log 2 "agent ready") > ready_before))
}
wait_for 30 "c2: systemd restarted the agent (Restart=on-failure; NRestarts=1, new MainPID, READY again)" restarted || exit 1
check "c2: the restart did not need a token (no second join)" test "$(count_log 2 "joined the cluster")" = 1
c2_alive_on_c1() { [ "$(status_of 1 c2)" = alive ]; }
wait_for 30 "c1 lists c2 as alive after the restart" c2_alive_on_c1
c1_alive_on_c2() { [ "$(status_of 2 c1)" = alive ]; }
wait_for 30 "the restarted c2 lists c1 as alive" c1_alive_on_c2

# ---------------------------------------------------------------------------- 7. fleet
# c3 joins; c2 becomes a CA replica; the bootstrap container c1 is destroyed for good; c2
# and c3 keep serving and renewing; c4 joins through c3 with a token made on replica c2.
join_container() { # join_container N SEED TOKEN
  cat >"$WORK/c$1/etc/weft/weft.toml" <<EOF
name = "c$1"
bind = "${IP[$1]}"
advertise = "${IP[$1]}"
join = ["$2"]
leaf_ttl = "30s"
EOF
  install -m 0600 /dev/null "$WORK/c$1/etc/weft/credentials/join-token"
  echo "$3" >"$WORK/c$1/etc/weft/credentials/join-token"
  cx "$1" systemctl daemon-reload
  cx "$1" timeout 90 systemctl start weft.service
}
token=$(cx 1 weft token create --ttl 10m 2>"$WORK/token.err" | tail -n 1)
[ -n "$token" ] || { cat "$WORK/token.err"; fatal "c1: weft token create for c3"; }
if join_container 3 "${IP[1]}" "$token"; then pass "c3: joined with a token"; else fatal "c3: systemctl start weft"; fi
if cx 1 weft ca add-replica c2 >"$WORK/replica.out" 2>&1; then
  pass "c1: weft ca add-replica c2 ($(cat "$WORK/replica.out"))"
else
  cat "$WORK/replica.out"; fatal "c1: weft ca add-replica c2"
fi
c2_replica_on() { members "$1" | jq -e '.[] | select(.name == "c2" and .ca == true and .status == "alive")' >/dev/null; }
wait_for 30 "c3 sees c2 as a CA replica (its intermediate chains to the root)" c2_replica_on 3 || exit 1
# The operator keeps a copy of the admin credential off c1.
cred=$(cx 1 cat /var/lib/weft/admin-credential)
[ -n "$cred" ] || fatal "c1: admin credential"
# Destroyed, not shut down: the container's PID 1 and nspawn are killed (no leave).
kill -KILL "${LEADER[1]}" "${NSPAWN_PID[1]}" 2>/dev/null
for _ in $(seq 1 40); do kill -0 "${NSPAWN_PID[1]}" 2>/dev/null || break; sleep 0.25; done
rm -rf "$WORK/c1/var/lib/weft"
check "c1: container killed and its /var/lib/weft deleted" \
  bash -c "! kill -0 ${NSPAWN_PID[1]} 2>/dev/null && [ ! -e '$WORK/c1/var/lib/weft' ]"
c1_failed_on() { [ "$(status_of "$1" c1)" = failed ]; }
wait_for 30 "c2 lists c1 as failed" c1_failed_on 2
wait_for 30 "c3 lists c1 as failed" c1_failed_on 3
renewed_before=$(count_log 3 "certificate renewed")
c3_renewed() { (($(count_log 3 "certificate renewed") > renewed_before)); }
wait_for 45 "c3 renews its 30 s certificate through replica c2 with c1 gone" c3_renewed
for n in 2 3; do
  check "c$n: weft still active/running" \
    test "$(unit_prop "$n" ActiveState)/$(unit_prop "$n" SubState)" = active/running
done
token=$(cx 2 env "WEFT_TOKEN=$cred" weft token create --ttl 10m 2>"$WORK/token.err" | tail -n 1)
[ -n "$token" ] || { cat "$WORK/token.err"; fatal "c2 (replica): weft token create"; }
case $token in
  *.c2) pass "c2: a token made on replica c2 names it" ;;
  *) fail "c2: token $token does not name c2" ;;
esac
if join_container 4 "${IP[3]}" "$token"; then
  pass "c4: joined through c3 (forwarded to replica c2)"
else
  fatal "c4: systemctl start weft"
fi
three_alive() {
  members "$1" | jq -e '[.[] | select(.status == "alive") | .name] | contains(["c2", "c3", "c4"])' >/dev/null
}
wait_for 30 "c2 lists c2, c3 and c4 as alive" three_alive 2
wait_for 30 "c4 lists c2, c3 and c4 as alive" three_alive 4

# ---------------------------------------------------------------------------- 8. stop
if cx 2 timeout 60 systemctl stop weft.service; then pass "c2: systemctl stop weft"; else fail "c2: systemctl stop weft"; fi
check "c2: unit inactive, Result=success, exit status 0 (no restart)" \
  test "$(unit_prop 2 ActiveState)/$(unit_prop 2 Result)/$(unit_prop 2 ExecMainStatus)" = inactive/success/0
c2_left_on_c3() { [ "$(status_of 3 c2)" = left ]; }
wait_for 30 "c3 lists c2 as left" c2_left_on_c3
check "c2: journal shows 'agent stopped after leaving the cluster'" \
  test "$(count_log 2 "agent stopped after leaving the cluster")" -ge 1

# ---------------------------------------------------------------------------- 9. names
# A service on c4; on c3 `weft dns install` sends *.weft to the agent through
# systemd-resolved, and glibc's resolver (getent) finds the service's virtual IP.
if cx 4 weft service register --name reviews --port 9080 --protocol http >"$WORK/register.out" 2>&1; then
  pass "c4: weft service register reviews"
else
  cat "$WORK/register.out"; fail "c4: weft service register reviews"
fi
# A host that uses resolved, as Debian sets one up when systemd-resolved is installed.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$WORK/c3/etc/resolv.conf"
cx 3 systemctl start systemd-resolved.service >/dev/null 2>&1 || true
if cx 3 weft dns install >"$WORK/dns.out" 2>&1; then
  pass "c3: weft dns install ($(head -c 120 "$WORK/dns.out"))"
else
  cat "$WORK/dns.out"; fail "c3: weft dns install"
fi
reviews_resolves() { cx 3 getent hosts reviews.weft | grep -q '^127\.2[45][0-9]\.'; }
if wait_for 30 "c3: getent hosts reviews.weft answers a virtual IP through resolved" reviews_resolves; then
  log "c3: $(cx 3 getent hosts reviews.weft)"
fi
other_zone_untouched() { ! cx 3 getent hosts nope.weft >/dev/null 2>&1; }
check "c3: an unknown .weft name does not resolve" other_zone_untouched
if cx 3 weft dns uninstall >/dev/null 2>&1; then pass "c3: weft dns uninstall"; else fail "c3: weft dns uninstall"; fi
check "c3: the drop-in is gone" bash -c "[ ! -e '$WORK/c3/etc/systemd/resolved.conf.d/weft.conf' ]"

# ---------------------------------------------------------------------------- 10. journal
for n in 2 3; do
  lines=$(cx "$n" journalctl -q _SYSTEMD_UNIT=weft.service SYSLOG_IDENTIFIER=weft -o cat --no-pager | wc -l)
  check "c$n: journalctl -u weft holds the agent's own log lines ($lines lines)" test "$lines" -gt 3
done
exit 0
