"""The dependency direction of the package, checked by parsing imports."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "charrnn"
LAYERS = {  # module: the charrnn modules it may import
    "errors": set(),
    "files": {"errors"},
    "config": {"errors"},
    "vocab": {"errors"},
    "distributed": set(),
    "onednn": set(),
    "allocator": set(),
    "precision": {"config", "errors"},
    "gru": {"onednn"},
    "model": {"config", "errors", "gru", "onednn"},
    "data": {"vocab", "errors"},
    "checkpoint": {"errors", "files"},
    "corpora": {"errors", "files"},
    "evaluate": {"allocator", "config", "data", "errors", "files", "model", "precision", "vocab"},
    "sampling": {"config", "errors", "model", "onednn", "vocab"},
    "train": {"allocator", "checkpoint", "config", "data", "distributed", "errors", "evaluate", "files", "model",
              "precision", "vocab"},
    "ui": set(),
}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_modules_import_only_downwards(module):
    names = imports_of(module)
    internal = {n.split(".")[1] for n in names if n.startswith("charrnn.")} | {
        n.split(".")[-1] for n in names if n == "charrnn" or n.startswith("charrnn.") and n.count(".") == 1}
    internal = {n for n in internal if (PACKAGE / f"{n}.py").exists()} - {module}
    assert internal <= LAYERS[module], f"{module} imports {internal - LAYERS[module]}"


@pytest.mark.parametrize("module", sorted(set(LAYERS) - {"ui"}))
def test_only_the_cli_and_ui_touch_typer_rich_and_tqdm(module):
    assert not {n.split(".")[0] for n in imports_of(module)} & {"typer", "rich", "tqdm", "click"}


def test_the_package_root_does_not_import_torch():
    assert "torch" not in imports_of("__init__")


@pytest.mark.parametrize("module, allowed", [("cli_common", set()), ("cli_corpus", {"cli_common"}),
                                             ("cli_inspect", {"cli_common"})])
def test_the_cli_modules_point_one_way_to_their_shared_helpers(module, allowed):
    """cli registers the commands of cli_inspect and cli_corpus; they never import cli back (no cycle)."""
    internal = {n.split(".")[1] for n in imports_of(module) if n.startswith("charrnn.cli")}
    assert internal <= allowed, f"{module} imports {internal - allowed}"
