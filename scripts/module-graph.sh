#!/usr/bin/env bash
# The server crate's module graph from cargo-modules, folded to top-level modules: prints one line per module with
# the modules it uses, and fails if any two of them use each other, directly or through others.
#
#   cargo install cargo-modules --version 0.27.0 --locked    (once; the newest needs a newer rustc)
#   scripts/module-graph.sh [--dot FILE]                      (FILE: the unfolded graph, for `dot -Tsvg`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dot="$(mktemp)"
trap 'rm -f "$dot"' EXIT
cargo modules dependencies --lib -p switchyard --no-externs --no-sysroot --no-fns --no-traits --no-types \
  --no-owns >"$dot"
[ "${1:-}" = --dot ] && cp "$dot" "$2"
python3 - "$dot" <<'PY'
import re, sys, collections
edges = collections.defaultdict(set)
for a, b in re.findall(r'"switchyard::(\w+)[^"]*" -> "switchyard::(\w+)[^"]*"', open(sys.argv[1]).read()):
    if a != b:
        edges[a].add(b)
for m in sorted(set(edges) | {b for bs in edges.values() for b in bs}):
    print(f"{m:12} -> {' '.join(sorted(edges[m]))}")
def find_cycle():
    state, stack = {}, []
    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = "done"
    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
cycle = find_cycle()
if cycle:
    sys.exit("cycle: " + " -> ".join(cycle))
print("no cycle between modules")
PY
