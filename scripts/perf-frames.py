#!/usr/bin/env python3
"""Where a `perf record --call-graph dwarf` profile's samples go, by Dunes frame.

Reads the output of

    perf script -i perf.data -F comm,ip,sym --no-inline > perf.txt

(seconds, where `perf report` with inlined frames takes minutes on this
binary) and prints, for the samples of one thread name (or all):

- "own": each sample counted once, under the innermost frame of Dunes code
  (`dunes_*`), i.e. that function plus the library code it called;
- "inclusive": each Dunes function counted once per sample it is on.

Usage: scripts/perf-frames.py perf.txt [THREAD_NAME] [--top N]
Thread names as perf shows them: dunes-decode, dunes (the driver),
tokio-rt-worker (rule plans, file reads), dunes-persist, dunes-train.
"""

import argparse
import collections
import sys


def samples(path):
    cur = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur is not None:
                    yield cur
                cur = None
            elif not line[0].isspace():
                cur = (line.split()[0] if line.split() else "?", [])
            elif cur is not None:
                parts = line.strip().split(None, 1)
                frame = parts[1] if len(parts) > 1 else "?"
                cur[1].append(frame.split("+0x")[0])
    if cur is not None:
        yield cur


def ours(frame):
    return frame.startswith(("dunes_", "<dunes_"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("perf_txt", help="output of perf script -F comm,ip,sym --no-inline")
    ap.add_argument("thread", nargs="?", help="thread name (default: all threads)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    own, incl = collections.Counter(), collections.Counter()
    total = selected = 0
    for comm, frames in samples(a.perf_txt):
        total += 1
        if a.thread is not None and comm != a.thread:
            continue
        selected += 1
        mine = [f for f in frames if ours(f)]
        leaf = frames[0] if frames else "?"
        own[mine[0] if mine else f"(no Dunes frame) {leaf}"] += 1
        for f in set(mine):
            incl[f] += 1
    if selected == 0:
        print(f"no samples for thread {a.thread!r} ({total} samples in all)")
        return 1
    print(f"{selected} samples of {total} ({100 * selected / total:.1f} %)"
          + (f" on thread {a.thread}" if a.thread else ""))
    for title, counts in (("own (with the library code it calls)", own), ("inclusive", incl)):
        print(f"--- {title}")
        for name, n in counts.most_common(a.top):
            print(f"{100 * n / selected:5.1f} %  {name[:120]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
