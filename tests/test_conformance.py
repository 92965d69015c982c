"""The task contract, checked over every discovered task with the rules mcqa.conformance ships
(the gold parses back, gold scored against itself is perfect, the prompt never depends on or
shows the answer, options agree, the splits are deterministic, disjoint and leak-free, the
schema is current); plus what only a test can check: the splits are the same under another
hash seed, and each built-in task's own promises."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from itertools import combinations

import pytest
from helpers import REPO, leak_text, load, split_digest

from mcqa.conformance import RULES, check_rule
from mcqa.prompting import LETTERS, render_prompt
from mcqa.registry import all_tasks, get_task
from mcqa.task import SPLITS

TASKS = all_tasks()
NAMES = [t.name for t in TASKS]
TASK_PROTOCOLS = [(t.name, p) for t in TASKS for p in t.protocols]
NON_MC = [t.name for t in TASKS if t.choice_field is None]


def default_examples(name: str):
    task = get_task(name)
    return [e for s in SPLITS for e in load(name, s, task.default_protocol)]


def test_builtin_tasks_are_discovered():
    assert {"mmlu_pro", "mmlu_pro_answer", "notification", "recipe_mpr"} <= set(NAMES)


@pytest.mark.parametrize(("name", "rule"), [(n, r) for n in NAMES for r in RULES])
def test_task_follows_the_contract(name, rule, qwen_tokenizer):
    """The rules mcqa.conformance ships (`mcqa check --task T` runs the same ones)."""
    failure = check_rule(get_task(name), rule, tokenizer=qwen_tokenizer, load=lambda s, p: load(name, s, p))
    assert failure is None, str(failure)


@pytest.mark.parametrize("name", NON_MC)
def test_qwen3_prompts_run_with_thinking_off(name, qwen_tokenizer):
    task = get_task(name)
    for e in default_examples(name)[:50]:
        assert render_prompt(qwen_tokenizer, task.messages(e)).endswith("<think>\n\n</think>\n\n"), e.id


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
    p = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT, str(REPO / "tests")],
        cwd=tmp_path_factory.mktemp("digests"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**env, "PYTHONHASHSEED": seed},
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize(("name", "protocol"), TASK_PROTOCOLS)
def test_splits_are_the_same_in_a_fresh_process(name, protocol, fresh_process_digests):
    for s in SPLITS:
        here = split_digest(load(name, s, protocol))
        assert fresh_process_digests[f"{name}/{protocol}/{s}"] == here, (
            f"{name}/{protocol}/{s} depends on the hash seed"
        )


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


def _assert_fractions(counts: dict[str, int], fractions: tuple[float, float, float], slack: float) -> None:
    n = sum(counts.values())
    for s, f in zip(SPLITS, fractions):
        assert abs(counts[s] - f * n) <= slack, (counts, fractions)


@pytest.mark.parametrize(
    "name,protocol,fractions,stratum",
    [
        ("notification", "seed", (0.6, 0.2, 0.2), lambda e: (e.target["folder"], e.target["priority"])),
        ("mmlu_pro", "seed", (0.6, 0.2, 0.2), lambda e: e.target["category"]),
        ("mmlu_pro", "full", (0.8, 0.1, 0.1), lambda e: e.target["category"]),
        ("recipe_mpr", "split", (0.8, 0.1, 0.1), None),
    ],
)
def test_split_fractions_and_stratification(name, protocol, fractions, stratum):
    splits = {s: load(name, s, protocol) for s in SPLITS}
    _assert_fractions({s: len(v) for s, v in splits.items()}, fractions, slack=1)
    if stratum is not None:  # each stratum is split in the same fractions (two rounding steps)
        by = {s: Counter(map(stratum, v)) for s, v in splits.items()}
        for key in set().union(*by.values()):
            _assert_fractions({s: by[s][key] for s in SPLITS}, fractions, slack=2)
    if (name, protocol) == ("notification", "seed"):
        assert [len(splits[s]) for s in SPLITS] == [720, 240, 240]


def test_recipe_mpr_folds_hold_a_fifth_each_and_a_tenth_of_the_rest_validates():
    for k in range(5):
        counts = {s: len(load("recipe_mpr", s, f"cv5-{k}")) for s in SPLITS}
        assert counts["test"] == 100
        assert counts["validation"] == 40 and counts["train"] == 360


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
