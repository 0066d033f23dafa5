#!/usr/bin/env python3
"""Replicates an MCP log corpus (NDJSON, optionally .gz) to a target size for
throughput benchmarks: copy k gets fresh event and session ids (suffix
`.r<k>`) and its timestamps (and token expiries) shifted by k times the
corpus span plus one hour, so copies follow each other in time and never
collide in the ledger's de-duplication or in session windows.

    scripts/replicate-corpus.py examples/corpus/mcp-public.ndjson.gz \
        --events 1000000 > /tmp/mcp-1m.ndjson
"""
import argparse
import datetime as dt
import gzip
import json
import sys


def parse_ts(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def fmt_ts(t):
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--events", type=int, required=True, help="lines to write")
    args = ap.parse_args()
    opener = gzip.open if args.corpus.endswith(".gz") else open
    with opener(args.corpus, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        sys.exit("empty corpus")
    times = [parse_ts(r["ts"]) for r in records]
    span = max(times) - min(times) + dt.timedelta(hours=1)
    out = sys.stdout
    written = 0
    k = 0
    while written < args.events:
        shift = span * k
        for r, t in zip(records, times):
            if written >= args.events:
                break
            c = dict(r)
            if k:
                c["ts"] = fmt_ts(t + shift)
                if "event_id" in c:
                    c["event_id"] = f"{c['event_id']}.r{k}"
                if c.get("session_id"):
                    c["session_id"] = f"{c['session_id']}.r{k}"
                auth = c.get("auth")
                if isinstance(auth, dict) and isinstance(auth.get("exp"), (int, float)):
                    c["auth"] = dict(auth, exp=int(auth["exp"] + shift.total_seconds()))
            out.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
            written += 1
        k += 1


if __name__ == "__main__":
    main()
