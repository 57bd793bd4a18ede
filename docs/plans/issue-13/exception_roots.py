"""Throwaway: every exception class (transitively) in our packages, with base and file:line."""
import ast, sys, pathlib
ROOT = pathlib.Path(sys.argv[1])
classes = {}
for top in ("ingest", "rules", "devices", "simulators"):
    for p in sorted((ROOT / top).rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                classes[node.name] = (bases, f"{p.relative_to(ROOT)}:{node.lineno}",
                                      (ast.get_docstring(node) or "").split("\n")[0])
BUILTIN = {n for n in dir(__builtins__) if n.endswith(("Error", "Exception")) or n in ("Exception", "ValueError")}
def is_exc(name, seen=()):
    if name in BUILTIN: return True
    if name in seen or name not in classes: return False
    return any(is_exc(b.split(".")[-1], seen + (name,)) for b in classes[name][0])
for name, (bases, where, doc) in classes.items():
    if is_exc(name):
        print(f"{where}\t{name}({', '.join(bases)})\t{doc}")
