# Oar step wrapper, protocol 1: the build container's command. The protocol is specified in
# oar_kube::wrapper (crates/oar-kube/src/wrapper.rs); keep both in step.
d=${OAR_SCRIPTS_DIR:-/oar/scripts}
l=${OAR_LOGS_DIR:-/oar/logs}
# On a signal the pod is going away: say so (once the status FIFO is open) and exit.
trap 'echo "exit 143" 2>/dev/null >&4; exit 143' TERM
trap 'echo "exit 130" 2>/dev/null >&4; exit 130' INT
# The agent creates both FIFOs; wait until they exist.
while [ ! -p "$d/control" ] || [ ! -p "$d/status" ]; do
  sleep 0.05 2>/dev/null || sleep 1
done
# Read-write opens never block and never see end-of-file.
exec 3<>"$d/control" 4<>"$d/status" || exit 2
sh=${OAR_STEP_SHELL:-}
if [ -z "$sh" ]; then
  sh=$(command -v bash 2>/dev/null) || sh=$(command -v sh 2>/dev/null) || sh=/bin/sh
fi
ss=
if [ -z "${OAR_WRAPPER_NO_SETSID:-}" ] && command -v setsid >/dev/null 2>&1; then
  ss=setsid
else
  read -r x <"/proc/$$/stat"
  x=${x##*) }
  set -- $x
  pgrp=$3
fi
# sig SIGNAL: signal every process of our process group but this shell, the reporter and the
# caller (the pgrp mode, without setsid).
sig() {
  s=$1
  read -r x </proc/self/stat
  self=${x%% *}
  for f in /proc/[0-9]*/stat; do
    { read -r x <"$f"; } 2>/dev/null || continue
    q=${x%% *}
    case $q in "$$" | "$rep" | "$self") continue ;; esac
    x=${x##*) }
    set -- $x
    [ "$3" = "$pgrp" ] && kill "-$s" "$q" 2>/dev/null
  done
}
# oomk: how many processes the kernel's OOM killer killed in this container's cgroup so far
# (cgroup v2 memory.events, v1 memory.oom_control); empty when unknown.
oomk() {
  for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
    [ -r "$f" ] || continue
    while read -r x y; do
      [ "$x" = oom_kill ] && { echo "$y"; return; }
    done <"$f"
  done
}
# meml: the container's memory limit in bytes, - when it has none (v1 says "none" with a
# 19-digit number, v2 with "max").
meml() {
  for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    [ -r "$f" ] && read -r x <"$f" || continue
    case $x in '' | *[!0-9]*) break ;; esac
    [ ${#x} -lt 19 ] && { echo "$x"; return; }
    break
  done
  echo -
}
# run ID (a background subshell, the reporter): run the step, then report its exit code, and
# whether the OOM killer struck meanwhile.
run() {
  o=$(oomk)
  if [ -n "$ss" ]; then
    setsid "$sh" "$d/$1.sh" </dev/null >"$l/$1.out" 2>&1 3>&- 4>&- &
  else
    "$sh" "$d/$1.sh" </dev/null >"$l/$1.out" 2>&1 3>&- 4>&- &
  fi
  p=$!
  echo "pgid $1 $p" >&3
  wait "$p"
  c=$?
  echo "fin $1" >&3
  n=$(oomk)
  if [ "$n" != "$o" ]; then
    echo "done $1 $c oom $(meml)" >&4
  else
    echo "done $1 $c" >&4
  fi
}
# cancel GRACE: TERM the step's process group now, KILL it after GRACE seconds. Until the step
# has called setsid its group does not exist yet: signal the process itself then.
cancel() {
  if [ -n "$ss" ]; then
    kill -TERM "-$pg" 2>/dev/null || kill -TERM "$pg" 2>/dev/null
    (sleep "$1"; kill -KILL "-$pg" 2>/dev/null || kill -KILL "$pg" 2>/dev/null) 3>&- 4>&- &
  else
    sig TERM
    (sleep "$1"; sig KILL) 3>&- 4>&- &
  fi
  k=$!
}
echo "ready 1 $sh ${ss:-pgrp}" >&4
cur= pg= rep= k= pend=
while read -r op id arg <&3; do
  case $op in
  run)
    case $id in '' | *[!A-Za-z0-9_.-]*) echo "error $id bad-id" >&4; continue ;; esac
    if [ -n "$cur" ]; then echo "error $id busy" >&4; continue; fi
    if [ ! -p "$l/$id.out" ]; then echo "error $id no-output-fifo" >&4; continue; fi
    cur=$id pg= pend= k=
    run "$id" &
    rep=$!
    ;;
  pgid)
    [ "$id" = "$cur" ] || continue
    pg=$arg
    [ -n "$pend" ] && cancel "$pend"
    ;;
  cancel)
    [ -n "$cur" ] && [ "$id" = "$cur" ] && [ -z "$k" ] && [ -z "$pend" ] || continue
    case $arg in '' | *[!0-9]*) arg=10 ;; esac
    if [ -n "$pg" ]; then cancel "$arg"; else pend=$arg; fi
    ;;
  fin)
    [ "$id" = "$cur" ] || continue
    wait "$rep"
    # KILL, not TERM: a just-forked subshell may still hold our TERM trap and lose the signal.
    if [ -n "$k" ]; then kill -KILL "$k" 2>/dev/null; wait "$k" 2>/dev/null; fi
    cur= pg= rep= k= pend=
    ;;
  exit) exit 0 ;;
  esac
done
exit 1
