"""The layering: decoding and streaming run without the training stack (Lightning, TensorBoard), and no module
imports a layer above its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# each layer may import itself and the layers before it (adapt sits above train: its stages run through the
# training loop, and training from a pretrained model adapts first)
LAYERS = ["data", "tokenize", "model", "train", "evaluate", "adapt", "stream", "cli"]


def test_inference_layers_import_without_lightning_or_tensorboard() -> None:
    code = (
        "import sys, spiketok.evaluate, spiketok.stream, spiketok.model;"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m.startswith("
        "'torch.utils.tensorboard') or m.startswith('spiketok.train') or m.startswith('spiketok.cli'));"
        "print(heavy); assert not heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "[]"


def _imported_layers(path: Path) -> set[str]:
    """The spiketok layers (top-level subpackages) a module imports, at any depth of the file; imports for
    type annotations only (under `if TYPE_CHECKING:`) do not count."""
    parts = path.relative_to(ROOT / "spiketok").with_suffix("").parts
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = node.module or ""
                if name.startswith("spiketok."):
                    found.add(name.split(".")[1])
                continue
            base = list(parts[:-1])[: len(parts) - node.level]  # the package the relative import starts from
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            elif node.names:  # `from .. import x` at the top: x is the layer
                found.update(a.name for a in node.names)
    return found


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for path in sorted((ROOT / "spiketok").rglob("*.py")):
        parts = path.relative_to(ROOT / "spiketok").parts
        if len(parts) < 2 or parts[0] not in LAYERS:
            continue
        layer = parts[0]
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for used in _imported_layers(path) & set(LAYERS):
            if used not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports spiketok.{used}")
    assert not wrong, wrong
