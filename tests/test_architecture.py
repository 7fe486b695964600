"""The package's layering, checked by parsing imports: every module is listed, and each imports only what the
README's layout table allows (cli → api → training · sampling · evaluate · visualize → model · data · checkpoint ·
corpora · … → config → errors; charrnn/cpu is reached only through kernels)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "charrnn"
LAYERS = {  # module: the charrnn modules it may import
    "__init__": {"errors", "api"},
    "__main__": {"cli"},
    "errors": set(),
    "files": {"errors"},
    "config": {"errors"},
    "vocab": {"errors"},
    "distributed": set(),
    "devices": {"config", "errors"},
    "cpu": {"cpu.allocator", "cpu.onednn", "cpu.gru"},
    "cpu.onednn": set(),
    "cpu.allocator": set(),
    "cpu.gru": {"cpu.onednn"},
    "kernels": {"cpu"},
    "model": {"config", "kernels"},
    "data": {"vocab", "errors", "files"},
    "checkpoint": {"config", "errors", "files", "model", "vocab"},
    "corpora": {"errors", "files"},
    "evaluate": {"config", "data", "devices", "errors", "files", "kernels", "lanes", "model", "vocab"},
    "sampling": {"config", "kernels", "model", "vocab"},
    "plan": {"config", "data"},
    "lanes": {"devices", "model"},
    "training": {"checkpoint", "config", "data", "devices", "distributed", "errors", "evaluate", "files", "kernels",
                 "lanes", "model", "plan", "sampling", "vocab"},
    "visualize": set(),
    "visualize.trace": {"config", "model", "sampling", "vocab"},
    "visualize.features": set(),
    "visualize.cells": {"errors", "visualize.features", "visualize.trace"},
    "visualize.page": {"files", "visualize.trace"},
    "visualize.chart": {"config", "errors"},
    "export": {"errors", "files", "model", "vocab"},
    "api": {"checkpoint", "config", "corpora", "data", "devices", "errors", "evaluate", "export", "plan", "sampling",
            "training", "vocab", "visualize.trace"},
    "ui": {"config"},
    "cli": {"cli.app"},
    "cli.common": {"config", "devices", "errors", "ui"},
    "cli.corpus": {"cli.common", "corpora", "errors", "files", "ui"},
    "cli.inspect_commands": {"api", "cli.common", "config", "data", "errors", "files", "ui", "visualize.cells",
                             "visualize.chart", "visualize.page"},
    "cli.app": {"__init__", "api", "cli.common", "cli.corpus", "cli.inspect_commands", "config", "data", "errors",
                "files", "ui"},
}


def module_path(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def all_modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.add(".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts))
    return found


def imports_of(module: str) -> set[str]:
    """Every name imported, as dotted module paths (`from a import b` counts as a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(module_path(module).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def internal_imports(module: str) -> set[str]:
    """The charrnn modules `module` imports: `from charrnn.a import b` is module a.b where that is a module,
    else module a (b is a name in it); `charrnn` itself is "__init__"."""
    known = all_modules()
    found = set()
    for node in ast.walk(ast.parse(module_path(module).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "charrnn":
            base = node.module.removeprefix("charrnn").lstrip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}" if base else alias.name
                found.add(child if child in known else base or "__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("charrnn.") for a in node.names if a.name.startswith("charrnn."))
    return found - {module}


def test_every_module_is_in_the_table():
    assert all_modules() == set(LAYERS)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_modules_import_only_what_the_layering_allows(module):
    extra = internal_imports(module) - LAYERS[module]
    assert not extra, f"{module} imports {extra}"


@pytest.mark.parametrize("module", sorted(m for m in LAYERS if m != "ui" and m.split(".")[0] != "cli"))
def test_only_the_cli_and_ui_touch_typer_rich_and_tqdm(module):
    assert not {n.split(".")[0] for n in imports_of(module)} & {"typer", "rich", "tqdm", "click"}


@pytest.mark.parametrize("module", sorted(set(LAYERS) - {"kernels"} - {m for m in LAYERS if m.startswith("cpu")}))
def test_nothing_but_the_kernels_hook_reaches_into_the_cpu_folder(module):
    assert not {n for n in internal_imports(module) if n.split(".")[0] == "cpu"}, module


@pytest.mark.parametrize("module", ["__init__", "cli", "cli.app", "cli.common", "cli.corpus", "cli.inspect_commands",
                                    "config", "errors"])
def test_charrnn_help_does_not_wait_for_torch(module):
    """The package root, the command line and what they import at the top stay free of torch."""
    top_level = set()
    for node in ast.parse(module_path(module).read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
        elif isinstance(node, ast.Import):
            top_level.update(a.name for a in node.names)
    assert not {n for n in top_level if n.split(".")[0] == "torch"}, module


def test_without_the_cpu_folder_charrnn_still_trains_samples_and_scores(tiny_corpus, tmp_path):
    """charrnn/cpu is an accelerator only: with it unimportable, kernels falls back to plain torch."""
    import subprocess
    import sys

    script = f"""
import sys, warnings
warnings.filterwarnings("ignore")
sys.modules["charrnn.cpu"] = None  # as if the folder were deleted: importing it raises ImportError
import charrnn
from charrnn import kernels
from torch import nn
assert kernels.cpu is None
run = charrnn.train({str(tiny_corpus)!r}, out={str(tmp_path / "run")!r}, cell="gru", hidden=16, embedding=8,
                    steps=20, seq_len=16, batch_size=4, device="cpu", precision="fp32")
model = charrnn.load(run.run_dir, device="cpu")
assert type(model.network.layers[0]) is nn.GRU and type(model.network.head) is nn.Linear
assert model.generate("the ", length=20, random_seed=0).startswith("the ")
assert model.evaluate().bits_per_char > 0
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
