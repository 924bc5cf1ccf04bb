"""Lines per app and imports between apps, for a checkout: `python scripts/layer_figures.py [ROOT]`.

Counts Python lines outside migrations, and every import statement (module level or inside a function) from one of
the project's packages into another, and how many of those point up or sideways in the layer order that
`pyproject.toml`'s import-linter contracts hold."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYER = {"qta": 0, "common": 1, "annotation": 2, "guardmodel": 3, "experts": 4, "jury": 4, "training": 5,
         "generation": 5, "demo": 6}  # fmt: skip
LIBRARIES = {"qta", "common"}


def main(root: Path) -> None:
    apps = [app for app in LAYER if (root / app).is_dir()]
    lines: dict[str, int] = {}
    between_apps = into_libraries = upward = 0
    for app in apps:
        lines[app] = 0
        for path in (root / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            lines[app] += len(text.splitlines())
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules = [node.module]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in LAYER or top == app:
                        continue
                    if top in LIBRARIES:
                        into_libraries += 1
                    else:
                        between_apps += 1
                    upward += LAYER[top] >= LAYER[app]
    print(f"{'package':<12} {'lines':>7}")
    for app in apps:
        print(f"{app:<12} {lines[app]:>7}")
    print(f"{'total':<12} {sum(lines.values()):>7}")
    print(
        f"imports between apps: {between_apps}; into qta/common: {into_libraries}; up or sideways: {upward}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
