#!/usr/bin/env python3
"""Checks a crate's layout rules (issue 19): no production function over
100 lines, at most 5 % over 50, and no import cycle between its files.

Usage: tools/layout.py gateway/src [--list]

It reads the source text, not the compiler's view: a function is counted
from its `fn` line to its closing brace (signature, comments and blank
lines included), unit-test modules (`#[cfg(test)] mod tests`, `tests.rs`,
`testing.rs` and files named in TEST_FILES) left out. A file imports
another when it names it through `crate::` or `super::` paths. Exit 1
with the violations listed, 0 otherwise.
"""

import glob
import os
import re
import sys

MAX_LINES = 100
LONG = 50
MAX_LONG_SHARE = 0.05
TEST_FILES = ("tests.rs", "testing.rs", "admission.rs")
FN = re.compile(r"\s*(pub(\([^)]*\))? )?(async )?(const )?(unsafe )?fn (\w+)")


def production_lines(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#[cfg(test)]") and i + 1 < len(lines) and lines[i + 1].startswith("mod tests"):
            return lines[:i]
    return lines


def functions(path):
    """(length, line, name) of each function with a body."""
    lines = production_lines(path)
    found = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            code = re.sub(r"//.*", "", lines[j])
            code = re.sub(r"'.'|\"(\\.|[^\"\\])*\"", "", code)
            depth += code.count("{") - code.count("}")
            started |= "{" in code
            if started and depth <= 0:
                found.append((j - i + 1, i + 1, m.group(6)))
                break
            if not started and code.rstrip().endswith(";"):
                break
    return found


def modules(src):
    """Module path (a::b) -> file, for every file of the crate."""
    mods = {}
    for path in glob.glob(os.path.join(src, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, src)[:-3]
        if rel.endswith("/mod"):
            rel = rel[: -len("/mod")]
        if rel in ("lib", "main") or os.path.basename(path) in TEST_FILES:
            continue
        mods[rel.replace(os.sep, "::")] = path
    return mods


def imports(mods, name, path):
    text = re.sub(r"//.*", "", "\n".join(production_lines(path)))

    def resolve(parts):
        for n in range(len(parts), 0, -1):
            candidate = "::".join(parts[:n])
            if candidate in mods and candidate != name:
                return candidate
        return None

    found = set()
    parent = name.rsplit("::", 1)[0] if "::" in name else ""
    for m in re.finditer(r"crate::([\w:]+)", text):
        found.add(resolve(m.group(1).split("::")))
    for m in re.finditer(r"super::(\w+)", text):
        found.add(resolve((parent + "::" + m.group(1)).strip(":").split("::")))
    # `use crate::{a, b::{c}}` and `use super::{a::x, b}`: each first name.
    for root, prefix in (("crate", ""), ("super", parent)):
        for m in re.finditer(r"use " + root + r"::\{(.*?)\};", text, re.S):
            body, depth, item, items = m.group(1), 0, "", []
            for ch in body:
                depth += (ch == "{") - (ch == "}")
                if ch == "," and depth == 0:
                    items.append(item)
                    item = ""
                else:
                    item += ch
            items.append(item)
            for it in items:
                first = re.match(r"\s*(\w+)", it)
                if first and first.group(1) != "self":
                    found.add(resolve((prefix + "::" + first.group(1)).strip(":").split("::")))
    found.discard(None)
    return found


def cycles(graph):
    """Strongly connected components of more than one file."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1]
    mods = modules(src)
    fns = [(n, path, line, name) for path in mods.values() for (n, line, name) in functions(path)]
    fns += [
        (n, p, line, name)
        for p in (os.path.join(src, "lib.rs"), os.path.join(src, "main.rs"))
        if os.path.exists(p)
        for (n, line, name) in functions(p)
    ]
    long = sorted((f for f in fns if f[0] > LONG), reverse=True)
    too_long = [f for f in long if f[0] > MAX_LINES]
    share = len(long) / max(len(fns), 1)
    loops = cycles({name: imports(mods, name, path) for name, path in mods.items()})
    print(
        f"{src}: {len(fns)} functions, {len(long)} over {LONG} lines ({share:.1%}), "
        f"{len(too_long)} over {MAX_LINES}; import cycles: {loops or 'none'}"
    )
    if "--list" in sys.argv:
        for n, path, line, name in long:
            print(f"  {n:4} {path}:{line} {name}")
    failed = bool(too_long) or share > MAX_LONG_SHARE or bool(loops)
    for n, path, line, name in too_long:
        print(f"  over {MAX_LINES}: {path}:{line} {name} ({n} lines)", file=sys.stderr)
    if share > MAX_LONG_SHARE:
        print(f"  more than {MAX_LONG_SHARE:.0%} of functions over {LONG} lines", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
