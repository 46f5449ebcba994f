#!/usr/bin/env python3
"""Module-level import graph of src/: edges from `crate::`/`super::` paths.

Usage: scripts/imports.py [--edges] [--check FROM->TO ...]
Prints the cycles (strongly connected components with more than one module,
between files and between top-level modules) and the edges from a lower
layer (`LOWER`: process, handoff, sys, ...) up to a higher module, and exits
1 if there is any: CI runs it, so the arrows keep pointing one way. With --check, also exits 1
if any of the given edges (module prefixes, e.g. `shared::tracker->process`)
exist.
"""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src')

def modules():
    mods = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, SRC)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib'):
                rel = rel[:-1]
            mods['::'.join(rel)] = p
    return mods

def strip_comments(s):
    s = re.sub(r'/\*.*?\*/', '', s, flags=re.S)
    return '\n'.join(l.split('//')[0] for l in s.split('\n'))

def root_reexports(mods):
    """`pub use x::{A, B}` in lib.rs: name -> module."""
    s = strip_comments(open(mods['']).read())
    out = {}
    for m in re.finditer(r'pub use (\w+)::\{([^}]*)\}|pub use (\w+)::(\w+);', s):
        mod = m.group(1) or m.group(3)
        names = m.group(2) or m.group(4)
        for n in re.split(r'[,\s]+', names):
            if n:
                out[n] = mod
    return out

def resolve(path, mods, reexp):
    """The longest module prefix of a `crate::a::b::C` path."""
    parts = path.split('::')
    if len(parts) == 1 and parts[0] in reexp:
        return reexp[parts[0]]
    for i in range(len(parts), 0, -1):
        cand = '::'.join(parts[:i])
        if cand in mods:
            return cand
    if parts[0] in reexp:
        return reexp[parts[0]]
    return None

def expand_use_tree(prefix, tree):
    """Flattens `a::{b, c::{d}}` into paths."""
    out = []
    depth, start, items = 0, 0, []
    for i, ch in enumerate(tree):
        if ch == '{': depth += 1
        elif ch == '}': depth -= 1
        elif ch == ',' and depth == 0:
            items.append(tree[start:i]); start = i + 1
    items.append(tree[start:])
    for it in items:
        it = it.strip()
        if not it:
            continue
        m = re.match(r'([\w:]*?)(::)?\{(.*)\}$', it, re.S)
        if m:
            base = m.group(1)
            out += expand_use_tree(prefix + ('::' + base if base else ''), m.group(3))
        else:
            it = it.split(' as ')[0].strip()
            out.append(prefix + ('::' + it if it not in ('self',) else ''))
    return out

def inline_mods(s):
    """The (start, end) offsets of each inline `mod name { ... }` block."""
    out = []
    for m in re.finditer(r'\bmod\s+\w+\s*\{', s):
        depth, i = 0, m.end() - 1
        while i < len(s):
            if s[i] == '{':
                depth += 1
            elif s[i] == '}':
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append((m.end(), i))
    return out

def edges():
    mods = modules()
    reexp = root_reexports(mods)
    es = {}
    for mod, p in mods.items():
        s = strip_comments(open(p).read())
        # Paths inside `#[cfg(test)] mod tests` blocks count too: they are
        # rare and an honest dependency of the file.
        inline = inline_mods(s)
        paths = []
        for m in re.finditer(r'\buse\s+((?:crate|super)(?:::[^;]*)?);', s, re.S):
            tree = re.sub(r'\s+', ' ', m.group(1))
            head, _, rest = tree.partition('::')
            if rest.startswith('{'):
                ps = [head + '::' + x for x in expand_use_tree('', rest[1:-1])]
            else:
                ps = expand_use_tree(head, rest) if '{' in rest else [tree]
            paths += [(m.start(), x) for x in ps]
        paths += [(m.start(), m.group(1)) for m in
                  re.finditer(r'(?<![\w:])((?:crate|super)(?:::\w+)+)', s)]
        here = mod.split('::') if mod else []
        for pos, path in paths:
            path = path.strip().strip(':')
            parts = path.split('::')
            if parts[0] == 'crate':
                parts = parts[1:]
            else:
                # `super` is the parent of this module, whether it lives in
                # `x.rs` or `x/mod.rs`; inside an inline `mod tests { .. }`
                # the first `super` is this file's module itself.
                depth = sum(1 for a, b in inline if a <= pos < b)
                base = list(here)
                while parts and parts[0] == 'super':
                    parts = parts[1:]
                    if depth:
                        depth -= 1
                    else:
                        base = base[:-1]
                parts = base + parts
            parts = [x for x in parts if x]
            if not parts:
                continue
            target = resolve('::'.join(parts), mods, reexp)
            if target is None or target == mod or target == '':
                continue
            # An edge into an ancestor module (its mod.rs) counts; into self does not.
            es.setdefault(mod, set()).add(target)
    return mods, es

def sccs(nodes, es):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in es.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(sorted(comp))
    for v in nodes:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]

# The lower layers of the crate (issue 12: process, handoff, sys, and what
# they stand on) and the top-level modules each may import: an edge from one
# of them to anything else points up, and fails like a cycle.
LOWER = {
    'error': set(),
    'util': set(),
    'codec': {'error'},
    'sys': {'error'},
    'logging': {'error', 'sys'},
    'handoff': {'codec', 'error', 'sys'},
    'resource_tracker': {'error', 'handoff', 'logging', 'sys'},
    'process': {'codec', 'error', 'handoff', 'logging', 'resource_tracker', 'sys', 'util'},
}

def is_child(parent, child):
    return child.startswith(parent + '::')

def main():
    mods, es = edges()
    args = sys.argv[1:]
    if '--edges' in args:
        for a in sorted(es):
            for b in sorted(es[a]):
                print(f'{a or "crate"} -> {b}')
    # Parent modules re-export their children (`mod.rs` -> child): those
    # edges are containment, not layering; drop them for cycle finding.
    layered = {a: {b for b in bs if not is_child(a, b)} for a, bs in es.items()}
    bad = 0
    if '--check' in args:
        for spec in args[args.index('--check') + 1:]:
            a, b = spec.split('->')
            hits = [(x, y) for x in es for y in es[x]
                    if (x == a or is_child(a, x)) and (y == b or is_child(b, y))]
            for x, y in hits:
                print(f'FORBIDDEN EDGE {x} -> {y}')
                bad = 1
            if not hits:
                print(f'ok: no edge {a} -> {b}')
    # The same graph between top-level modules (`process`, `shared`, ...):
    # a cycle there is a layering problem even when no two files import
    # each other.
    top = {}
    for a, bs in es.items():
        ta = a.split('::')[0]
        for b in bs:
            tb = b.split('::')[0]
            if ta and tb and ta != tb:
                top.setdefault(ta, set()).add(tb)
    for c in sccs(sorted(top), top):
        inner = [f'{a}->{b} ({", ".join(sorted(f"{x}->{y}" for x in es for y in es[x] if x.split("::")[0] == a and y.split("::")[0] == b))})'
                 for a in c for b in sorted(top.get(a, ())) if b in c]
        print('top-level cycle:', ', '.join(c))
        for e in inner:
            print('   ', e)
        bad = 1
    for a in sorted(es):
        ta = a.split('::')[0]
        for b in sorted(es[a]):
            tb = b.split('::')[0]
            if ta in LOWER and tb != ta and tb not in LOWER[ta]:
                print(f'upward edge: {a} -> {b} (the lower layer {ta} may import only '
                      f'{", ".join(sorted(LOWER[ta])) or "nothing"})')
                bad = 1
    for c in sccs(sorted(mods), layered):
        # Show the edges that make the cycle.
        inner = [f'{a}->{b}' for a in c for b in sorted(layered.get(a, ())) if b in c]
        print('cycle:', ', '.join(c))
        print('   edges:', ', '.join(inner))
        bad = 1
    if not bad:
        print('ok: no import cycle, no upward edge from a lower layer')
    sys.exit(bad)

if __name__ == '__main__':
    main()
