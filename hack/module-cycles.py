#!/usr/bin/env python3
"""Import cycles between the top-level modules of each crate (issue 7: none allowed).

A module `m` (src/m.rs or src/m/) depends on `n` when its code, comments and tests aside,
names `crate::n`. Prints each cycle (a strongly connected set of modules and its edges)
and exits 1 when there is one; hack/test.sh runs it with the lints.
Usage: hack/module-cycles.py [WORKSPACE_ROOT]
"""
import glob
import os
import re
import sys
from collections import defaultdict


def modules(src):
    out = set()
    for e in os.listdir(src):
        if e.endswith(".rs") and e not in ("lib.rs", "main.rs"):
            out.add(e[:-3])
        elif os.path.isdir(os.path.join(src, e)) and e != "bin":
            out.add(e)
    return out


def files_of(src, m):
    files = []
    if os.path.exists(os.path.join(src, m + ".rs")):
        files.append(os.path.join(src, m + ".rs"))
    d = os.path.join(src, m)
    if os.path.isdir(d):
        for dp, _, fs in os.walk(d):
            files += [os.path.join(dp, f) for f in fs if f.endswith(".rs")]
    return files


def graph(src):
    mods = modules(src)
    g = defaultdict(set)
    for m in mods:
        for f in files_of(src, m):
            text = open(f, encoding="utf-8").read()
            text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
            text = re.sub(r"#\[cfg\(test\)\]\s*mod \w+\s*\{.*", "", text, flags=re.S)
            for used in re.findall(r"crate::(\w+)", text):
                if used in mods and used != m:
                    g[m].add(used)
            for group in re.findall(r"use crate::\{([^;]*)\}", text, flags=re.S):
                for used in re.findall(r"(?:^|[\s,{])(\w+)", group):
                    if used in mods and used != m:
                        g[m].add(used)
    return mods, g


def cycles(mods, g):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    bad = 0
    crates = [os.path.dirname(os.path.relpath(p, root))
              for p in glob.glob(os.path.join(root, "*", "Cargo.toml"))
              + glob.glob(os.path.join(root, "*", "*", "Cargo.toml"))]
    for crate in sorted(crates):
        src = os.path.join(root, crate, "src")
        if not os.path.isdir(src):
            continue
        mods, g = graph(src)
        for comp in cycles(mods, g):
            bad += 1
            edges = ", ".join(f"{a} -> {b}" for a in comp for b in sorted(g[a]) if b in comp)
            print(f"{crate}: modules {', '.join(comp)} import each other: {edges}")
    if bad:
        sys.exit(1)
    print("no import cycle between the top-level modules of any crate")


if __name__ == "__main__":
    main()
