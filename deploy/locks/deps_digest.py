"""Print the sha256 of what the locks are compiled from: pyproject.toml's dependencies and the
extras the images install (serve, serve-gpu, train). The dev extra is left out on purpose."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKED_EXTRAS = ("serve", "serve-gpu", "train")


def deps_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    tables = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": {k: v for k, v in extras.items() if k in LOCKED_EXTRAS},
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    sys.stdout.write(deps_digest() + "\n")
