"""The import layers, as STYLE.md states them: no import cycle among mcqa's
modules, no function-level import of an mcqa module (a lazy import is only for an optional
heavy dependency), and no torch on the scoring side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import gold_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcqa"
# Lazy imports allowed anywhere: optional or heavy dependencies a command may never need.
LAZY_OK = {"xgrammar", "matplotlib", "scipy", "bitsandbytes", "transformers.modeling_gguf_pytorch_utils", "openai"}
# ... and in named modules: heavy libraries a command that lists, shows or refuses never needs
# (torch and transformers cost ~5 s to import, scikit-learn ~2.5 s, on a 2-core machine; a typo
# was answered in 12 s). The baselines (and the embeddings they use) stay torch-free until an
# embedding baseline runs; the model aliases list, install-check and refuse without torch; a
# split or a metric imports scikit-learn when it is computed.
LAZY_OK_IN = {
    "mcqa.compare.embeddings": {"torch", "transformers"},
    "mcqa.compare.finetuned": {"torch", "transformers"},
    "mcqa.model.aliases": {"torch", "transformers"},
    "mcqa.model.sources": {"torch", "transformers"},
    "mcqa.model.loading": {"torch", "transformers"},
    "mcqa.splits": {"sklearn"},
    "mcqa.eval.metrics": {"sklearn"},
}
# The scoring side: every module of mcqa/eval/, and what a predictions file from anywhere needs.
SCORING_SIDE = sorted(
    {f"mcqa.eval.{p.stem}" for p in (PACKAGE / "eval").glob("*.py") if p.stem != "__init__"}
    | {"mcqa.eval", "mcqa.schema", "mcqa.compare.paired"}
)
# Light commands: each runs in a fresh process, and none may import these.
HEAVY = ("torch", "transformers", "peft")
# Where mcqa imports its own modules by name (importlib): the lazy re-exports, and the CLI loading
# only the command being run (and the model path of score and predict when a model runs).
BY_NAME_OK = {"mcqa.names", "mcqa._cli", "mcqa._cli.common"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, ast.Module]:
    root = package.parent
    return {
        module_name(p, root): ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(package.rglob("*.py"))
    }


def imported(node: ast.AST, known: set[str]) -> list[str]:
    """The modules an import statement names: `from mcqa.x import y` is mcqa.x.y when that is
    a module, else mcqa.x."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
    return []


def top_level_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Imports that run when the module is imported: in its body, and in top-level if/try blocks."""
    found: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        found.update(imported(node, known))
        if isinstance(node, (ast.If, ast.Try)):
            stack += (
                node.body
                + node.orelse
                + getattr(node, "finalbody", [])
                + [s for h in getattr(node, "handlers", []) for s in h.body]
            )
    return found


def lazy_imports(tree: ast.Module, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function or class body."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for inner in ast.walk(node):
                out += [(inner.lineno, m) for m in imported(inner, known)]
    return sorted(set(out))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def with_packages(m: str, names: set[str], known: set[str]) -> set[str]:
    """What importing `names` runs, from module m: each module and every package above it (its
    __init__ runs first), except m's own ancestors (their __init__ is already running)."""
    out = set()
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            pkg = ".".join(parts[:k])
            if pkg in known and pkg != m and not m.startswith(pkg + "."):
                out.add(pkg)
    return out


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the mcqa modules and packages its import runs (package __init__ files counted:
    `from mcqa.readouts.decoding import x` runs mcqa/readouts/__init__.py, and all it imports)."""
    known = set(trees)
    return {m: with_packages(m, top_level_imports(t, known), known) for m, t in trees.items()}


def layer_problems(package: Path = PACKAGE) -> list[str]:
    trees = modules(package)
    known = set(trees)
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(import_graph(trees))]
    top = package.name
    for m, tree in trees.items():
        for line, name in lazy_imports(tree, known):
            root = name.split(".")[0]
            if root == top:
                problems.append(f"{m}:{line}: function-level import of {name}; import it at the top of the module")
            elif name not in LAZY_OK and root not in LAZY_OK and root not in LAZY_OK_IN.get(m, set()):
                problems.append(f"{m}:{line}: function-level import of {name}, which is no optional heavy dependency")
    return problems


def test_mcqa_has_no_import_cycle_and_no_function_level_import_of_its_own_modules():
    assert layer_problems() == []


def test_only_the_cli_and_the_lazy_exports_import_modules_by_name():
    """importlib.import_module hides an import from the layer check, so it is allowed only where
    loading by name is the point (BY_NAME_OK)."""
    found = {
        m
        for m, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "import_module"
    }
    assert found <= BY_NAME_OK, f"{sorted(found - BY_NAME_OK)} import by name"


def test_the_check_catches_a_cycle_and_a_hidden_import(tmp_path):
    """The check itself can fail: a package with a -> b -> a and a function-level import."""
    pkg = tmp_path / "mcqa"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from mcqa.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text(
        "from mcqa import a\n\ndef g():\n    from mcqa.c import h\n    import requests\n    return h()\n"
    )
    (pkg / "c.py").write_text("def h():\n    import xgrammar\n    return 1\n")
    problems = layer_problems(pkg)
    assert "import cycle: mcqa.a <-> mcqa.b" in problems
    assert any("mcqa.b:4: function-level import of mcqa.c" in p for p in problems)
    assert any("mcqa.b:5: function-level import of requests" in p for p in problems)
    assert not any("xgrammar" in p for p in problems)


def test_the_check_counts_package_init_files(tmp_path):
    """modes.listwise imports readouts.decoding and readouts.choice imports modes.choice: no two
    modules import each other, but each package's __init__ imports the module that reaches into
    the other package, so importing either package runs the other's: a cycle."""
    pkg = tmp_path / "mcqa"
    for sub, init, files in (
        (
            "modes",
            "from mcqa.modes import listwise, choice\n",
            {"listwise": "from mcqa.readouts.decoding import f\n", "choice": ""},
        ),
        (
            "readouts",
            "from mcqa.readouts import choice, decoding\n",
            {"choice": "from mcqa.modes.choice import g\n", "decoding": ""},
        ),
    ):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text(init)
        for name, text in files.items():
            (pkg / sub / f"{name}.py").write_text(text)
    (pkg / "__init__.py").write_text("")
    assert any(
        p.startswith("import cycle:") and "mcqa.modes" in p and "mcqa.readouts" in p for p in layer_problems(pkg)
    )
    (pkg / "readouts" / "choice.py").write_text("")
    assert layer_problems(pkg) == []


def test_modes_and_readouts_never_import_each_other():
    graph = import_graph(modules())
    for a, b in (("mcqa.modes", "mcqa.readouts"), ("mcqa.readouts", "mcqa.modes")):
        bad = sorted(
            m
            for m, deps in graph.items()
            if (m == a or m.startswith(a + ".")) and any(d == b or d.startswith(b + ".") for d in deps)
        )
        assert bad == [], f"{bad} import {b}"


def test_a_command_that_refuses_or_lists_imports_no_torch_and_no_sklearn():
    """What the CLI touches before any model or split is needed (the package, its errors, the task
    registry with every built-in task, the model aliases) loads none of the heavy libraries: a
    wrong name is answered at once, not after seconds of imports."""
    code = (
        "import sys, mcqa, mcqa.errors, mcqa.model, mcqa.registry, mcqa.eval.scoring, mcqa.schema;"
        "[mcqa.registry.get_task(t) for t in ('notification', 'recipe_mpr', 'mmlu_pro', 'mmlu_pro_answer')];"
        "mcqa.model.list_models(); mcqa.model.get_alias('tiny-qwen3');"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", f"a refusal would first import {out.strip()}"
    # ... and the lazy names still resolve to what they name.
    code = (
        "import mcqa, mcqa.model as m; from mcqa.model import *; "
        "print(m.verify.__module__, mcqa.k_fold.__module__, m.DEFAULT_MODEL)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["mcqa.model.verify", "mcqa.splits", "Qwen/Qwen3-0.6B"]


def test_the_scoring_side_never_imports_torch():
    code = (
        f"import sys; import {', '.join(SCORING_SIDE)}; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", f"the scoring side imported {out.strip()}"


def _light_run(argv: list[str], cwd: Path) -> tuple[int, list[str], str]:
    """`mcqa ARGV` in a fresh Python process: its exit code, which heavy libraries it imported, stderr."""
    code = (
        "import sys\nfrom mcqa._cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        f"print('HEAVY', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\nsys.exit(rc)"
    )
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    heavy = next(line for line in p.stderr.splitlines() if line.startswith("HEAVY")).split()[1:]
    return p.returncode, heavy, p.stderr


def test_light_commands_never_import_torch_transformers_or_peft(tmp_path):
    """--help, tasks, schema, check, show, runs and score --predictions read files and print:
    each, in a fresh process, ends without torch, transformers or peft in sys.modules."""
    preds = write_jsonl(tmp_path / "preds.jsonl", gold_rows("notification", "test", "seed"))
    runs = tmp_path / "runs"
    runs.mkdir()
    commands = [
        ["--help"],
        ["tasks"],
        ["schema", "--task", "notification"],
        ["check", "--task", "notification"],
        ["show", "--task", "recipe_mpr", "-n", "1"],
        ["runs", str(runs)],
        ["score", "--task", "notification", "--predictions", str(preds), "--out", str(tmp_path / "scored")],
    ]
    for argv in commands:
        rc, heavy, err = _light_run(argv, tmp_path)
        assert rc == 0, f"mcqa {' '.join(argv)} failed: {err[-500:]}"
        assert heavy == [], f"mcqa {' '.join(argv)} imported {heavy}"
    assert (tmp_path / "scored" / "metrics.json").is_file()
    # ... and the check can fail: a command that loads a model imports them.
    rc, heavy, _ = _light_run(["train", "--help"], tmp_path)
    assert rc == 0 and "torch" in heavy
