#!/usr/bin/env bash
# The packet-path comparison of the README: `ilp-lightning bench` and the JS reference pair
# (benches/js-bench), alternating, three runs of each per configuration, each JSON line tagged
# with the load average at its start; then the medians and the ratios.
#
#   benches/packet-path.sh [PACKETS]      # default 20000; needs a release build and `npm ci`
#                                         # in benches/js-bench
#   OURS=path/to/ilp-lightning benches/packet-path.sh    # another build of ours
#
# Configurations: concurrency 1, concurrency 1 with the whole process on CPU 0 (our --pin 0,
# `taskset -c 0` for Node), concurrency 100 from 100 threads each waiting in `send_data`, and
# concurrency 100 as a window of `submit_data` kept by one thread (`--threads 1`). The machine should be otherwise idle: check
# `uptime` first, and run again when a build was hogging the CPU (the load is in every line).
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-20000}"
ours="${OURS:-${CARGO_TARGET_DIR:-target}/release/ilp-lightning}"
[ -x "$ours" ] || { echo "build it first: cargo build --release" >&2; exit 2; }
[ -d benches/js-bench/node_modules ] || (cd benches/js-bench && npm ci --no-audit --no-fund >&2)
out="$(mktemp)"
load() { cut -d' ' -f1 /proc/loadavg; }
run() { # config-name command...
  local name="$1"; shift
  local l; l="$(load)"
  local line; line="$("$@")"
  echo "{\"config\":\"$name\",\"load\":$l,\"result\":$line}" | tee -a "$out"
}
for round in 1 2 3; do
  run c1 "$ours" bench --packets "$packets" --concurrency 1
  run c1 node benches/js-bench/bench.js "$packets" 1
  run c1-pinned "$ours" bench --packets "$packets" --concurrency 1 --pin 0
  run c1-pinned taskset -c 0 node benches/js-bench/bench.js "$packets" 1
  run c100 "$ours" bench --packets "$packets" --concurrency 100
  run c100 node benches/js-bench/bench.js "$packets" 100
  run c100-window-1 "$ours" bench --packets "$packets" --concurrency 100 --threads 1
  run c100-window-1 node benches/js-bench/bench.js "$packets" 100
done
node - "$out" <<'EOF'
const lines = require('fs').readFileSync(process.argv[2], 'utf8').trim().split('\n').map(JSON.parse)
const median = xs => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const keys = ['packets_per_s', 'p50_us', 'p99_us', 'cpu_us_per_packet', 'rss_mb']
for (const config of [...new Set(lines.map(l => l.config))]) {
  const of = impl => lines.filter(l => l.config === config && l.result.impl.startsWith(impl))
  const m = impl => Object.fromEntries(keys.map(k => [k, median(of(impl).map(l => l.result[k]))]))
  const [rust, js] = [m('rust'), m('js')]
  const loads = lines.filter(l => l.config === config).map(l => l.load)
  console.log(JSON.stringify({
    config, load_min: Math.min(...loads), load_max: Math.max(...loads), rust, js,
    packets_per_s_ratio: +(rust.packets_per_s / js.packets_per_s).toFixed(1),
    cpu_per_packet_ratio: +(js.cpu_us_per_packet / rust.cpu_us_per_packet).toFixed(1)
  }))
}
EOF
rm -f "$out"
