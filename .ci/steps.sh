# Sourced by .ci/run and .ci/run-long: named, timed steps and steps run side by side.
#
#   step "name"        starts a step (and ends the previous one, printing its duration)
#   par name cmd...    runs cmd (a command or a shell function) in the background, its output
#                      kept in a file
#   timed name cmd...  runs cmd and prints its duration; inside a par, the duration also goes
#                      to the table
#   join               waits for every par, prints each one's output and duration in turn, and
#                      fails if any of them failed
#   fuzz_all 3s [k/n]  fuzzes every target of the module for 3 s each (shard k of n: every n-th
#                      package from the k-th)
#
# When the script exits, failed or not, a table of the steps' durations is printed.

ci_steps=()
ci_step_name=""
ci_step_start=0
ci_par_dir=$(mktemp -d)
ci_par_names=()
ci_par_pids=()

step() {
  step_end
  ci_step_name="$*"
  ci_step_start=$SECONDS
  printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"
}

step_end() {
  ci_flush_timed
  [ -n "$ci_step_name" ] || return 0
  local d=$((SECONDS - ci_step_start))
  ci_steps+=("$(printf '%5ds  %s' "$d" "$ci_step_name")")
  printf '=== %s: %ds\n' "$ci_step_name" "$d"
  ci_step_name=""
}

par() {
  local name=$1 f="$ci_par_dir/${#ci_par_names[@]}"
  shift
  (
    start=$SECONDS
    # The inner subshell keeps set -e (a function's first failing command ends it); run in the
    # background and waited for, it is not in a || list, where bash would ignore set -e.
    (set -e; "$@") >"$f.log" 2>&1 &
    rc=0
    wait $! || rc=$?
    echo "$rc $((SECONDS - start))" >"$f.rc"
    exit $rc
  ) &
  ci_par_names+=("$name")
  ci_par_pids+=($!)
  echo "started in the background: $name"
}

# ci_flush_timed moves the durations recorded by timed into the table.
ci_flush_timed() {
  if [ -f "$ci_par_dir/timed" ]; then
    mapfile -t -O "${#ci_steps[@]}" ci_steps <"$ci_par_dir/timed"
    rm -f "$ci_par_dir/timed"
  fi
}

timed() {
  local name=$1 start=$SECONDS rc=0
  shift
  printf '\n=== %s (%s)\n' "$name" "$(date -u +%H:%M:%S)"
  "$@" || rc=$?
  printf '=== %s: %ds%s\n' "$name" $((SECONDS - start)) "$([ $rc = 0 ] || echo ", FAILED (exit $rc)")"
  printf '%5ds      %s\n' $((SECONDS - start)) "$name" >>"$ci_par_dir/timed"
  return $rc
}

join() {
  local i name rc d failed=()
  for i in "${!ci_par_pids[@]}"; do
    name=${ci_par_names[$i]}
    wait "${ci_par_pids[$i]}" || true
    read -r rc d <"$ci_par_dir/$i.rc"
    printf '\n--- %s: exit %s after %ds\n' "$name" "$rc" "$d"
    cat "$ci_par_dir/$i.log"
    ci_steps+=("$(printf '%5ds    (%s, side by side)' "$d" "$name")")
    [ "$rc" = 0 ] || failed+=("$name")
  done
  ci_flush_timed
  ci_par_names=()
  ci_par_pids=()
  if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    return 1
  fi
}

# fuzz_all DURATION [k/n] fuzzes every target of the module (every `func Fuzz...` in a _test.go
# file) for DURATION each, one after the other; with k/n only those of every n-th package from
# the k-th. Each package's test binary is built once, with the
# fuzzing instrumentation (go test -c -fuzz), and run once per target in the package's directory
# with go test's fuzz cache: what `go test -fuzz` does, without a link per target. The fuzzing
# runs at the lowest priority (nice 19): in .ci/run it shares the CPU with tests that wait on
# real time (a demo stopped at once, a call paused at a given moment) and should take only what
# they leave; -fuzztime is wall time, so it takes no longer for it. (The builds keep their
# priority: at nice 19 they took 90 s longer and the lane became the longest.)
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline exceeded" when
# -fuzztime ends while a worker is mid-input (golang/go#75804, fixed in Go 1.27). A real failure
# writes its input under testdata/fuzz/<target>/; a failure that wrote none and says exactly that
# is run once more, and fails only if it happens again.
fuzz_once() {
  local dir=$1 bin=$2 cache=$3 fn=$4 fuzztime=$5 out rc
  for attempt in 1 2; do
    set +e
    out=$(cd "$dir" && nice -n 19 "$bin" -test.run='^$' -test.fuzz="^${fn}\$" -test.fuzztime="$fuzztime" -test.fuzzcachedir="$cache" 2>&1)
    rc=$?
    set -e
    echo "$out"
    [ $rc -eq 0 ] && return 0
    if [ -n "$(git status --porcelain --untracked-files=all -- "$dir/testdata/fuzz/$fn")" ] \
       || ! grep -q '^    context deadline exceeded$' <<<"$out"; then
      return $rc
    fi
    echo "warning: $fn: 'context deadline exceeded' with no failing input (golang/go#75804); attempt $attempt"
  done
  return 1
}

fuzz_all() {
  local fuzztime=$1 shard=${2:-1/1} dir pkg bin cache fn targets=0 start i=0
  local bins
  bins=$(mktemp -d)
  while read -r dir; do
    # Shard k/n takes every n-th package from the k-th: two lanes can share the targets.
    i=$((i + 1))
    [ $(((i - 1) % ${shard#*/})) -eq $((${shard%/*} - 1)) ] || continue
    pkg=$(go list -f '{{.ImportPath}}' "$dir")
    bin="$bins/$(basename "$dir").test"
    go test -c -fuzz=. -o "$bin" "$dir"
    cache="$(go env GOCACHE)/fuzz/$pkg"
    for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
      echo "--- $dir $fn"
      start=$SECONDS
      fuzz_once "$dir" "$bin" "$cache" "$fn" "$fuzztime"
      echo "ok  $dir $fn $((SECONDS - start))s"
      targets=$((targets + 1))
    done
    rm -f "$bin"
  done < <(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
  rm -rf "$bins"
  echo "$targets fuzz targets (shard $shard), $fuzztime each"
}

ci_summary() {
  local rc=$?
  step_end
  printf '\n=== step durations (%s)\n' "$([ "$rc" = 0 ] && echo ok || echo "FAILED, exit $rc")"
  printf '%s\n' "${ci_steps[@]}"
  printf '%5ds  total\n' "$SECONDS"
  rm -rf "$ci_par_dir"
}
trap ci_summary EXIT
