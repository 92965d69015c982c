"""The task contract, checked over every discovered task: the gold parses back, gold scored
against itself is perfect, the prompt never depends on (or shows) the answer, the committed
JSON Schema is current, and the splits are deterministic, disjoint and leak-free."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pytest
from helpers import leak_text, load, load_all, split_digest

from mcqa.prompting import LETTERS, render_prompt, serialize_target
from mcqa.registry import all_tasks, get_task
from mcqa.schema import schema_file
from mcqa.scoring import compute_metrics, make_records, parser_for
from mcqa.task import SPLITS

REPO = Path(__file__).resolve().parent.parent

TASKS = all_tasks()
NAMES = [t.name for t in TASKS]
TASK_PROTOCOLS = [(t.name, p) for t in TASKS for p in t.protocols]
NON_MC = [t.name for t in TASKS if t.choice_field is None]


def default_examples(name: str):
    task = get_task(name)
    return [e for s in SPLITS for e in load(name, s, task.default_protocol)]


def other_target(task, target: dict) -> dict:
    """A valid target that differs from `target` in every field that has a label space."""
    out = dict(target)
    for f, space in task.label_spaces.items():
        if space is not None:
            values = list(space.values)
            out[f] = values[(values.index(target[f]) + 1) % len(values)]
        elif isinstance(target[f], str):
            out[f] = target[f] + " (other)"
        elif isinstance(target[f], int):
            out[f] = target[f] + 1
    return out


def test_builtin_tasks_are_discovered():
    assert {"mmlu_pro", "mmlu_pro_answer", "notification", "recipe_mpr"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_gold_round_trips_through_the_parser(name):
    task = get_task(name)
    parser = parser_for(task)
    examples = default_examples(name)
    assert examples
    for e in examples:
        assert e.target is not None, f"{e.id} is unlabeled"
        text = serialize_target(task.output, e.target)
        parsed = parser.parse(text)
        assert parsed.status == "ok", (e.id, text, parsed)
        assert parsed.value == e.target, (e.id, text, parsed.value)
        assert parsed.notes == (), (e.id, parsed.notes)


@pytest.mark.parametrize(("name", "protocol"), TASK_PROTOCOLS)
def test_scoring_gold_against_itself_is_perfect(name, protocol):
    task = get_task(name)
    examples = list(load(name, "test", protocol))
    preds = {e.id: {"id": e.id, "output": serialize_target(task.output, e.target)} for e in examples}
    m = compute_metrics(task, make_records(task, examples, preds), resamples=50)

    assert m["n"] == len(examples)
    assert m["parse"]["failure_rate"] == 0
    assert m["parse"]["counts"]["ok"] == len(examples)
    assert m["joint"]["accuracy"] == 1.0
    assert m["joint"]["ci"] == [1.0, 1.0]
    for f in task.fields:
        fm = m["fields"][f]
        assert fm["accuracy"] == 1.0, f
        assert fm["ci"]["accuracy"] == [1.0, 1.0], f
        for k in ("macro_f1", "micro_f1", "weighted_f1"):
            if k in fm:
                assert fm[k] == pytest.approx(1.0), (f, k, fm[k])
        if "qwk" in fm:
            assert fm["qwk"] == pytest.approx(1.0)
            assert fm["mae"] == 0.0
            assert fm["within1"] == 1.0
        if "confusion" in fm:
            matrix = fm["confusion"]["matrix"]
            off_diagonal = sum(v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j)
            assert off_diagonal == 0
    for g, s in m["groups"].items():
        assert s["joint_accuracy"] == 1.0 and s["parse_failures"] == 0, g
    if task.choice_field:
        assert m["positions"]["predicted"] == m["positions"]["gold"]
        assert m["positions"]["failed"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_prompt_never_depends_on_the_gold(name):
    task = get_task(name)
    for e in default_examples(name):
        shown = task.messages(e)
        assert shown, e.id
        assert task.messages(replace(e, target=None)) == shown, e.id
        assert task.messages(replace(e, target=other_target(task, e.target))) == shown, e.id


@pytest.mark.parametrize("name", NON_MC)
def test_rendered_prompt_never_contains_the_answer(name, qwen_tokenizer):
    task = get_task(name)
    for e in default_examples(name):
        prompt = render_prompt(qwen_tokenizer, task.messages(e))
        assert prompt.endswith("<think>\n\n</think>\n\n"), "Qwen3 must run with thinking off"
        for answer in (serialize_target(task.output, e.target), json.dumps(e.target, ensure_ascii=False)):
            assert answer not in prompt, (e.id, answer)


@pytest.mark.parametrize("name", NAMES)
def test_schema_file_is_up_to_date(name):
    task = get_task(name)
    path = schema_file(task)
    assert path.is_file(), f"{path} missing; run `mcqa schema --write`"
    assert json.loads(path.read_text(encoding="utf-8")) == task.output.model_json_schema()


@pytest.mark.parametrize(("name", "protocol"), TASK_PROTOCOLS)
def test_splits_are_deterministic_disjoint_and_leak_free(name, protocol):
    task = get_task(name)
    splits = load_all(name, protocol)
    ids = {s: [e.id for e in ex] for s, ex in splits.items()}
    for s in SPLITS:
        assert ids[s], f"split {s} is empty"
        assert len(set(ids[s])) == len(ids[s]), f"repeated ids in {s}"
        assert [e.id for e in task.load(s, protocol)] == ids[s], f"{s} changes between loads"
    texts = {s: Counter(leak_text(e) for e in ex) for s, ex in splits.items()}
    for a, b in combinations(SPLITS, 2):
        assert not set(ids[a]) & set(ids[b]), f"ids shared by {a} and {b}"
        shared = set(texts[a]) & set(texts[b])
        assert not shared, f"{len(shared)} texts in both {a} and {b}, e.g. {next(iter(shared))[:80]!r}"


_DIGEST_SCRIPT = """
import hashlib, json, sys
from mcqa.registry import all_tasks
sys.path.insert(0, sys.argv[1])
from helpers import split_digest
out = {}
for t in all_tasks():
    for p in t.protocols:
        for s in ("train", "validation", "test"):
            out[f"{t.name}/{p}/{s}"] = split_digest(t.load(s, p))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fresh_process_digests(tmp_path_factory):
    """Split digests (ids, targets and option order) from a fresh interpreter whose hash seed
    differs from this one's."""
    ours = os.environ.get("PYTHONHASHSEED", "")
    seed = str(int(ours) + 1) if ours.isdigit() else "1"  # ours is random unless pinned
    env = {k: v for k, v in os.environ.items() if k != "MCQA_TASKS_PATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    p = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT, str(REPO / "tests")], cwd=tmp_path_factory.mktemp("digests"),
                       capture_output=True, text=True, timeout=300, check=False, env={**env, "PYTHONHASHSEED": seed})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize(("name", "protocol"), TASK_PROTOCOLS)
def test_splits_are_the_same_in_a_fresh_process(name, protocol, fresh_process_digests):
    for s in SPLITS:
        here = split_digest(load(name, s, protocol))
        assert fresh_process_digests[f"{name}/{protocol}/{s}"] == here, f"{name}/{protocol}/{s} depends on the hash seed"


# --- task-specific promises -------------------------------------------------------------


def test_recipe_mpr_gold_letter_is_spread_over_the_options():
    task = get_task("recipe_mpr")
    letters = Counter(e.target["answer"] for e in default_examples("recipe_mpr"))
    assert sum(letters.values()) == 500
    assert set(letters) == set(LETTERS[:5]), letters
    # 500 items over 5 letters: a fair shuffle puts ~100 on each; the raw file puts all 500 on A.
    assert all(60 <= letters[x] <= 140 for x in LETTERS[:5]), letters
    assert task.choice_field == "answer"


def test_recipe_mpr_cv_test_folds_partition_all_items():
    everything = {e.id for e in default_examples("recipe_mpr")}
    assert len(everything) == 500
    folds = [p for p in get_task("recipe_mpr").protocols if p.startswith("cv5-")]
    assert len(folds) == 5
    tests = [{e.id for e in load("recipe_mpr", "test", p)} for p in folds]
    assert sum(len(t) for t in tests) == 500
    assert set().union(*tests) == everything
    for a, b in combinations(tests, 2):
        assert not a & b
    for p in folds:
        assert {e.id for s in SPLITS for e in load("recipe_mpr", s, p)} == everything, p


def test_mmlu_pro_seed_protocol_has_142_per_category():
    examples = [e for s in SPLITS for e in load("mmlu_pro", s, "seed")]
    assert len(examples) == 1988
    counts = Counter(e.target["category"] for e in examples)
    assert len(counts) == 14
    assert set(counts.values()) == {142}, counts


@pytest.mark.parametrize("protocol", ["seed", "full"])
def test_mmlu_pro_and_mmlu_pro_answer_share_split_ids(protocol):
    assert get_task("mmlu_pro_answer").protocols == get_task("mmlu_pro").protocols
    for s in SPLITS:
        a = [e.id for e in load("mmlu_pro", s, protocol)]
        b = [e.id for e in load("mmlu_pro_answer", s, protocol)]
        assert a == b, s


def test_mmlu_pro_full_protocol_uses_every_deduplicated_question():
    examples = [e for s in SPLITS for e in load("mmlu_pro", s, "full")]
    texts = [leak_text(e) for e in examples]
    assert len(set(texts)) == len(texts) > 11_000


# --- multiple choice: the gold letter points at the gold option --------------------------------


def _letter_points_at(examples, raw_gold_text: dict[str, str], raw_options: dict[str, list[str]]) -> None:
    assert examples
    for e in examples:
        options = e.input["options"]
        assert sorted(options) == sorted(raw_options[e.id]), e.id  # a permutation of the raw options
        assert options[LETTERS.index(e.target["answer"])] == raw_gold_text[e.id], e.id


def test_recipe_mpr_gold_letter_points_at_the_raw_answer_text():
    raw = json.loads((REPO / "data" / "recipe_mpr" / "500QA.json").read_text(encoding="utf-8"))
    gold = {f"rmpr-{i:03d}": r["options"][r["answer"]] for i, r in enumerate(raw)}
    options = {f"rmpr-{i:03d}": list(r["options"].values()) for i, r in enumerate(raw)}
    examples = default_examples("recipe_mpr")
    assert len(examples) == 500
    _letter_points_at(examples, gold, options)
    # and the shown order is not the raw one (where the gold is always first)
    assert sum(e.input["options"] != options[e.id] for e in examples) > 450


def test_mmlu_pro_answer_gold_letter_points_at_the_raw_answer_text():
    with gzip.open(REPO / "data" / "mmlu_pro" / "mmlu_pro_test_12032.jsonl.gz", "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    gold = {f"mmlu-{r['question_id']}": r["options"][r["answer_index"]] for r in raw}
    options = {f"mmlu-{r['question_id']}": r["options"] for r in raw}
    examples = [e for s in SPLITS for e in load("mmlu_pro_answer", s, "full")]
    assert len(examples) > 11_000
    _letter_points_at(examples, gold, options)
