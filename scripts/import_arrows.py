"""Print the import arrows between the top-level folders (every import statement, also inside
functions), and mark those that point up the layers.

Layers (issue 11): cli / eval / serve / finetune → graphs → agents → tools / models → core.
``mmagents/cli/`` counts as the cli layer, the rest of ``mmagents/`` as core; prompts/ (data
files) sits with tools / models.

    python scripts/import_arrows.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

FOLDERS = (
    "mmagents",
    "models",
    "tools",
    "agents",
    "prompts",
    "graphs",
    "eval",
    "finetune",
    "serve",
)
RANK = {"core": 0, "models": 1, "tools": 1, "prompts": 1, "agents": 2, "graphs": 3}
RANK.update({"cli": 4, "eval": 4, "serve": 4, "finetune": 4})


def layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "mmagents":
        return None
    if len(parts) > 1 and parts[1] == "cli":
        return "cli"
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return "core"


def layer_of_file(root: Path, path: Path) -> str:
    rel = path.relative_to(root).parts
    if rel[0] != "mmagents":
        return rel[0]
    return (
        "cli"
        if rel[1] in ("cli", "cli.py", "_commands.py") or rel[1].startswith("_cli")
        else "core"
    )


def arrows(root: Path) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            src = layer_of_file(root, path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    dst = layer_of_module(name)
                    if dst is not None and dst != src:
                        found[(src, dst)].add(str(path.relative_to(root)))
    return found


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    table = arrows(root)
    upward = 0
    for (src, dst), files in sorted(table.items()):
        up = RANK[src] < RANK[dst]
        upward += up
        mark = "  UP: " + ", ".join(sorted(files)) if up else ""
        print(f"{src:9} -> {dst:9} {len(files):3d} file(s){mark}")
    print(f"{len(table)} arrows, {upward} pointing up")


if __name__ == "__main__":
    main()
