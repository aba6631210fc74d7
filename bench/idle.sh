# Sourced by the bench scripts (not run): how this machine's idle CPUs wait.
# On a guest with the haltpoll cpuidle driver an idle vCPU polls up to
# guest_halt_poll_ns before it halts (a VM exit on the next wake-up); without
# a cpuidle driver it halts at once (the default idle loop), whatever the
# governor and guest_halt_poll_ns say. Every permission round trip wakes two
# threads, so this sets much of its cost.

HALTPOLL_PARAM=/sys/module/haltpoll/parameters/guest_halt_poll_ns

# idle_driver: the cpuidle driver's name, `none`, or `?`.
idle_driver() {
  cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'
}

# idle_desc: one line for a page's machine table.
idle_desc() {
  local driver gov
  driver=$(idle_driver)
  if [ "$driver" = none ]; then
    echo "(no driver): an idle vCPU halts at once (the default idle loop; no polling)"
    return
  fi
  gov=$(cat /sys/devices/system/cpu/cpuidle/current_governor 2>/dev/null || echo '?')
  if [ "$driver" = haltpoll ] && [ -r "$HALTPOLL_PARAM" ]; then
    echo "driver haltpoll, governor $gov, guest_halt_poll_ns = $(cat "$HALTPOLL_PARAM")"
  else
    echo "driver $driver, governor $gov"
  fi
}
