"""Throwaway: every import of our packages, with file:line, resolved to module names."""
import ast, sys, pathlib, collections
ROOT = pathlib.Path(sys.argv[1])
OURS = ("siaga", "siaga_core", "ingest", "rules", "devices", "simulators", "tests", "bench")
def modname(p):
    parts = list(p.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)
edges = []
for top in OURS:
    for p in sorted((ROOT / top).rglob("*.py")):
        if ".node" in p.parts: continue
        mod = modname(p)
        tree = ast.parse(p.read_text(), str(p))
        # note whether import is at module level or inside function / TYPE_CHECKING
        parents = {}
        for node in ast.walk(tree):
            for ch in ast.iter_child_nodes(node): parents[ch] = node
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    if p.name != "__init__.py": base = base[:-1]
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    m = ".".join(base + ([node.module] if node.module else []))
                else:
                    m = node.module
                targets = [m + "." + a.name if False else m for a in node.names[:1]]
                # keep names for detail
            else:
                continue
            where = "top"
            q = node
            while q in parents:
                q = parents[q]
                if isinstance(q, (ast.FunctionDef, ast.AsyncFunctionDef)): where = "lazy"; break
                if isinstance(q, ast.If) and "TYPE_CHECKING" in ast.unparse(q.test): where = "typing"; break
            for t in targets:
                if t.split(".")[0] in OURS:
                    names = ",".join(a.name for a in node.names) if isinstance(node, ast.ImportFrom) else ""
                    edges.append((mod, t, f"{p.relative_to(ROOT)}:{node.lineno}", where, names))
mode = sys.argv[2] if len(sys.argv) > 2 else "all"
if mode == "pkg":
    c = collections.Counter((a.split(".")[0], b.split(".")[0]) for a, b, *_ in edges if a.split(".")[0] != b.split(".")[0])
    for (a, b), n in sorted(c.items()): print(f"{a:11} -> {b:11} {n}")
else:
    for e in edges:
        if mode == "cross" and e[0].split(".")[0] == e[1].split(".")[0]: continue
        print(*e, sep="\t")
