"""The endpoint readout and `mcqa export`, against an OpenAI-compatible server this test
starts itself (a small fake whose answers and log-probabilities follow a known distribution),
so the default suite stays offline; one test reads out a real vLLM server and skips itself
when no serving environment is installed."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import CLI, CliRuns, assert_user_error, run_cli, synth_env

from mcqa.errors import McqaError
from mcqa.prompting import serialize_target
from mcqa.readouts import run_readout
from mcqa.readouts.endpoint import branch_probs, build_request, read_journal
from mcqa.registry import get_task
from mcqa.schema import task_schema

CHUNK = 3  # the fake tokenizer: every 3 characters of a value are one token


def fake_distribution(content: str, n: int) -> list[float]:
    """The fake model's belief over n candidates, fixed by the question's text."""
    rng = random.Random(content)
    w = [math.exp(3 * rng.random()) for _ in range(n)]
    return [x / sum(w) for x in w]


def generate(candidates: list[str], probs: list[float], noise: bool) -> list[dict]:
    """Greedy, CHUNK characters a token, with the exact conditional probability of every
    consistent next chunk as the alternatives (what a grammar-masked server returns), plus a
    token no candidate allows when `noise` (a raw-logprobs server: the reader must drop it)."""
    out, text = [], ""
    while True:
        alive = [(c, p) for c, p in zip(candidates, probs) if c.startswith(text)]
        if any(c == text for c, _ in alive):
            return out
        mass: dict[str, float] = {}
        for c, p in alive:
            mass[c[len(text) : len(text) + CHUNK]] = mass.get(c[len(text) : len(text) + CHUNK], 0.0) + p
        total = sum(mass.values())
        token = max(mass, key=mass.get)
        alts = [{"token": t, "logprob": math.log(m / total)} for t, m in mass.items()]
        if noise:
            alts.append({"token": "\n\n", "logprob": math.log(0.9)})
        out.append({"token": token, "logprob": math.log(mass[token] / total), "top_logprobs": alts})
        text += token


class Fake:
    """What the server was asked, and how it misbehaves."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first = 0
        self.fail_status = 503
        self.always_fail = False
        self.delay = 0.0
        self.finish = "stop"
        self.noise = True
        self.lock = threading.Lock()

    def answer(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(body)
            n = len(self.requests)
        if self.always_fail or n <= self.fail_first:
            return self.fail_status, {"error": {"message": "busy", "code": self.fail_status}}
        time.sleep(self.delay)
        content = body["messages"][-1]["content"]
        so = body["structured_outputs"]
        if "choice" in so:
            steps = generate(so["choice"], fake_distribution(content, len(so["choice"])), self.noise)
        else:  # json: each label field a segment of its own, the rest fixed tokens
            steps = []
            props = so["json"]["properties"]
            steps.append({"token": "{", "logprob": 0.0, "top_logprobs": [{"token": "{", "logprob": 0.0}]})
            for k, (f, spec) in enumerate(props.items()):
                head = ("," if k else "") + json.dumps(f) + ":"
                steps.append({"token": head, "logprob": 0.0, "top_logprobs": [{"token": head, "logprob": 0.0}]})
                allowed = spec["enum"] if "enum" in spec else range(spec["minimum"], spec["maximum"] + 1)
                values = [json.dumps(v) for v in allowed]
                steps += generate(values, fake_distribution(content + f, len(values)), self.noise)
            steps.append({"token": "}", "logprob": 0.0, "top_logprobs": [{"token": "}", "logprob": 0.0}]})
        text = "".join(s["token"] for s in steps)
        return 200, {
            "id": f"c{n}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": self.finish,
                    "logprobs": {"content": steps},
                }
            ],
        }


@pytest.fixture()
def server():
    fake = Fake()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.headers.append({k.lower(): v for k, v in self.headers.items()})
            status, reply = fake.answer(body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield fake
    httpd.shutdown()


def synth():
    return get_task("synth")


@pytest.fixture(autouse=True)
def _synth_task(synth_tasks):
    yield


def test_branch_probs_follow_the_generated_branch_and_share_the_others():
    start = len('{"folder":')
    steps = [
        ('{"folder":', {}),
        ('"F', {'"F': math.log(0.6), '"W': math.log(0.2), " ": math.log(0.2)}),  # " " fits no label: dropped
        ("un", {"un": math.log(0.3), "amily": math.log(0.15), "am": math.log(0.05), "}": math.log(0.5)}),  # "}" too
        ('",', {'",': 0.0}),
    ]
    p = branch_probs(steps, start, ['"Work"', '"Family"', '"Fun"'])
    assert p == pytest.approx({'"Work"': 0.25, '"Fun"': 0.75 * 0.6, '"Family"': 0.75 * 0.4})
    assert branch_probs(steps, start, ['"Home"']) == {}  # the reply is none of them


def test_requests_are_built_from_the_task_schema():
    task = get_task("notification")
    e = next(iter(task.load("test", task.default_protocol)))
    body = build_request(task, e, "served")
    spaces = task.label_spaces
    assert len(body["structured_outputs"]["choice"]) == len(spaces["folder"].values) * len(spaces["priority"].values)
    assert serialize_target(task.output, e.target) in body["structured_outputs"]["choice"]
    assert body["messages"] == task.messages(e) and body["model"] == "served"
    assert body["temperature"] == 0.0 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert build_request(task, e, "served", joint_limit=4)["structured_outputs"] == {"json": task_schema(task)}


def test_probabilities_are_the_servers_renormalised_over_the_labels(server, monkeypatch):
    task = synth()
    examples = list(task.load("test", "default"))[:12]
    monkeypatch.setenv("MCQA_TEST_KEY", "sekret")
    out = run_readout(
        "endpoint",
        None,
        None,
        task,
        examples,
        url=server.url,
        served_model="m",
        api_key_env="MCQA_TEST_KEY",
        max_in_flight=3,
    )
    labels = task.label_spaces["label"].values
    for e, o in zip(examples, out):
        true = fake_distribution(e.input["text"], len(labels))
        assert o["probs"]["label"] == pytest.approx({str(v): p for v, p in zip(labels, true)}, abs=1e-9)
        assert json.loads(o["output"]) == {"label": labels[max(range(len(labels)), key=true.__getitem__)]}
        assert o["truncated"] is False and o["endpoint"]["model"] == "m"
    assert {h["authorization"] for h in server.headers} == {"Bearer sekret"}  # the key from the environment
    assert len(server.requests) == 12


def test_json_mode_reads_each_label_field(server):
    task = get_task("notification")
    examples = list(task.load("test", task.default_protocol))[:4]
    out = run_readout("endpoint", None, None, task, examples, url=server.url, served_model="m", joint_limit=4)
    assert "json" in server.requests[0]["structured_outputs"]
    for e, o in zip(examples, out):
        content = next(r for r in server.requests if r["messages"] == task.messages(e))["messages"][-1]["content"]
        for f, space in task.label_spaces.items():
            true = fake_distribution(content + f, len(space.values))
            assert o["probs"][f] == pytest.approx({str(v): p for v, p in zip(space.values, true)}, abs=1e-9)


def test_length_finish_is_truncated_and_busy_answers_are_retried(server):
    server.fail_first, server.fail_status, server.finish = 2, 429, "length"
    task = synth()
    examples = list(task.load("test", "default"))[:2]
    out = run_readout("endpoint", None, None, task, examples, url=server.url, served_model="m", max_in_flight=1)
    assert [o["truncated"] for o in out] == [True, True]
    assert sum(o["endpoint"]["retries"] for o in out) == 2 and len(server.requests) == 4


def test_a_server_that_keeps_failing_is_one_line(server, tmp_path):
    server.always_fail, server.fail_status = True, 500
    cli = CliRuns(tmp_path, workers=2)
    cli.start(
        "failing",
        [
            "predict",
            "--task",
            "synth",
            "--split",
            "test",
            "--endpoint",
            server.url,
            "--served-model",
            "m",
            "--readout-opt",
            "max_retries=0",
            "--out",
            tmp_path / "p.jsonl",
        ],
        synth_env(),
    )
    cli.start(
        "no_model",
        ["predict", "--task", "synth", "--split", "test", "--endpoint", server.url, "--out", tmp_path / "q.jsonl"],
        synth_env(),
    )
    assert_user_error(cli["failing"], "500", "--served-model")
    assert_user_error(cli["no_model"], "--served-model")
    cli.close()


def test_a_journal_from_elsewhere_is_refused(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "s001", "output": "{}"}\n')
    with pytest.raises(McqaError, match="finished predictions"):
        read_journal(f, {"s001"}, "m")
    f.write_text('{"id": "zzz", "output": "{}", "endpoint": {"model": "m"}}\n')
    with pytest.raises(McqaError, match="another run"):
        read_journal(f, {"s001"}, "m")
    f.write_text('{"id": "s001", "output": "{}", "endpoint": {"model": "m"}}\n{"id": "s0')  # cut off by a kill
    assert list(read_journal(f, {"s001"}, "m")) == ["s001"]
    link = tmp_path / "link.jsonl"
    link.symlink_to(f)  # a valid journal, but not the user's own file
    with pytest.raises(McqaError, match="symbolic link"):
        read_journal(link, {"s001"}, "m")


def test_a_killed_run_resumes_and_ends_with_the_same_file(server, tmp_path):
    server.delay = 0.03
    cmd = [
        "predict",
        "--task",
        "synth",
        "--split",
        "test",
        "--endpoint",
        server.url,
        "--served-model",
        "m",
        "--readout-opt",
        "max_in_flight=2",
    ]
    whole = run_cli([*cmd, "--out", tmp_path / "whole.jsonl"], tmp_path, synth_env())
    assert whole.rc == 0, whole.err
    assert "resumed" not in whole.err  # a fresh run resumes nothing (its first, lone request is no resume)
    first = len(server.requests)
    cut = tmp_path / "cut.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(CLI), *map(str, [*cmd, "--out", cut])],
        cwd=tmp_path,
        env=synth_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (cut.is_file() and cut.read_text().count("\n") >= 10):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it was cut"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {json.loads(line)["id"] for line in cut.read_text().splitlines() if line.endswith("}")}
    asked_before = len(server.requests)
    done = run_cli([*cmd, "--out", cut], tmp_path, synth_env())
    assert done.rc == 0, done.err
    assert "resumed" in done.err
    again = [r["messages"][-1]["content"] for r in server.requests[asked_before:]]
    texts = {e.id: e.input["text"] for e in synth().load("test", "default")}
    assert not kept & {i for i, t in texts.items() if t in again}  # nothing already answered was asked again
    assert cut.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    summary = json.loads(cut.with_suffix(".json").read_text())
    assert summary["endpoint"] == server.url and summary["latency_s"]["max"] >= 0.03
    assert first == len(texts)


def test_score_reads_out_a_server_and_scores_it_like_any_predictions(server, tmp_path):
    out = tmp_path / "scored"
    r = run_cli(
        [
            "score",
            "--task",
            "synth",
            "--split",
            "test",
            "--endpoint",
            server.url,
            "--served-model",
            "m",
            "--resamples",
            "50",
            "--out",
            out,
        ],
        tmp_path,
        synth_env(),
    )
    assert r.rc == 0, r.err
    task, labels = synth(), synth().label_spaces["label"].values
    test = list(task.load("test", "default"))
    expected = sum(
        labels[max(range(4), key=fake_distribution(e.input["text"], 4).__getitem__)] == e.target["label"] for e in test
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fields"]["label"]["accuracy"] == pytest.approx(expected / len(test))
    assert "calibration" in metrics["fields"]["label"]  # the server's probabilities reach the report


# ---------------------------------------------------------------- export


@pytest.fixture(scope="module")
def generate_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    run = d / "run"
    r = run_cli(
        [
            "train",
            "--task",
            "synth",
            "--model",
            "tiny-qwen3",
            "epochs=1",
            "max_train_examples=16",
            "max_eval_examples=8",
            "max_test_examples=8",
            "micro_batch_size=8",
            "eval_max_new_tokens=8",
            f"output_dir={run}",
        ],
        d,
        synth_env(OMP_NUM_THREADS="1"),
    )
    assert r.rc == 0, r.err[-2000:]
    return run


def test_export_writes_a_bundle_vllm_serves_as_is(generate_run, tmp_path):
    out = tmp_path / "bundle"
    r = run_cli(["export", generate_run, "--to", "vllm", out, "--name", "synth-lora"], tmp_path, synth_env())
    assert r.rc == 0, r.err
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == (
        generate_run / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert (out / "tokenizer" / "tokenizer_config.json").is_file()
    assert json.loads((out / "tokenizer" / "config.json").read_text())["model_type"] == "qwen3"  # vLLM reads it
    assert json.loads((out / "labels.json").read_text()) == {"label": ["north", "south", "east", "west"]}
    assert json.loads((out / "schema.json").read_text()) == task_schema(synth())
    serve = (out / "serve.sh").read_text()
    for flag in (
        "--enable-lora",
        '--lora-modules "synth-lora=$HERE/adapter"',
        "--max-lora-rank 16",
        "--max-logprobs 20",
        "--logprobs-mode processed_logprobs",
        "--generation-config vllm",
        "vllm.entrypoints.openai.api_server",
    ):
        assert flag in serve, flag
    assert os.access(out / "serve.sh", os.X_OK)
    meta = json.loads((out / "mcqa.json").read_text())
    assert meta["served_model"] == "synth-lora" and meta["lora_r"] == 16 and meta["task"] == "synth"
    assert json.loads((out / "request.json").read_text())["model"] == "synth-lora"
    assert not list(tmp_path.glob(".bundle.partial-*"))


def test_export_refuses_what_it_cannot_serve(generate_run, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    head = tmp_path / "head"
    head.mkdir()
    (head / "run.json").write_text(
        json.dumps({"task": "synth", "protocol": "default", "model": "tiny-qwen3", "mode": "head"})
    )
    cli = CliRuns(tmp_path, workers=3)
    cli.start("full", ["export", generate_run, "--to", "vllm", full], synth_env())
    cli.start("head", ["export", head, "--to", "vllm", tmp_path / "b"], synth_env())
    cli.start("nothing", ["export", tmp_path / "nothing", "--to", "vllm", tmp_path / "b2"], synth_env())
    assert_user_error(cli["full"], "not empty")
    assert_user_error(cli["head"], "head")
    assert_user_error(cli["nothing"], "not a training run")
    cli.close()
    assert not (tmp_path / "b").exists() and not (tmp_path / "b2").exists()


# ---------------------------------------------------------------- a real vLLM server

# A real server takes minutes to start and a core while it idles, so it runs only when asked:
# MCQA_VLLM_PYTHON names the Python of a vLLM environment (scripts/vllm-serve.sh makes one in
# ~/.cache/mcqa/vllm-env).
VLLM_PYTHON = Path(os.environ.get("MCQA_VLLM_PYTHON", "/nonexistent"))


def vllm_sized_run(d: Path) -> Path:
    """tiny-qwen3 reshaped to head_dim 64 (vLLM's CPU attention refuses tiny-qwen3's 16:
    "Unsupported CPU attention configuration: head_dim=16"), trained until it is sure: an untrained
    model's near-uniform next tokens let the server's grammar take any tokenization of a label
    (tried: 34 of 80 labels agreed), which is no parity question."""
    import torch
    from transformers import AutoConfig, Qwen3ForCausalLM

    from mcqa.model import load_tokenizer, resolve_model

    config = AutoConfig.from_pretrained(resolve_model("tiny-qwen3"))
    (
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
    ) = 128, 256, 2, 1, 64
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(d / "base")
    load_tokenizer("tiny-qwen3").save_pretrained(d / "base")
    run = d / "run"
    r = run_cli(
        [
            "train",
            "--task",
            "synth",
            "--model",
            d / "base",
            "epochs=8",
            "max_train_examples=120",
            "max_eval_examples=40",
            "max_test_examples=8",
            "micro_batch_size=4",
            "batch_size=4",
            "learning_rate=5e-3",
            "patience=null",
            f"output_dir={run}",
        ],
        d,
        synth_env(),
        timeout=900,
    )
    assert r.rc == 0, r.err[-2000:]
    return run


@pytest.mark.skipif(
    not VLLM_PYTHON.is_file(),
    reason="no vLLM serving environment: set MCQA_VLLM_PYTHON (scripts/vllm-serve.sh makes one)",
)
def test_a_real_vllm_server_reads_out_like_mcqa(tmp_path):
    generate_run = vllm_sized_run(tmp_path)
    bundle = tmp_path / "bundle"
    assert (
        run_cli(["export", generate_run, "--to", "vllm", bundle, "--name", "synth-lora"], tmp_path, synth_env()).rc == 0
    )
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "PYTHON": str(VLLM_PYTHON), "PORT": str(port), "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = tmp_path / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(bundle / "serve.sh")], env=env, stdout=f, stderr=subprocess.STDOUT)

    def server_said() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-25:])

    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 300
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, f"vLLM did not start:\n{server_said()}"
                time.sleep(2)
        preds = tmp_path / "served.jsonl"
        r = run_cli(
            [
                "predict",
                "--task",
                "synth",
                "--split",
                "test",
                "--endpoint",
                url,
                "--served-model",
                "synth-lora",
                "--out",
                preds,
            ],
            tmp_path,
            synth_env(),
            timeout=600,
        )
        assert r.rc == 0, f"{r.err}\nthe server said:\n{server_said()}"
        mine = tmp_path / "mine.jsonl"
        r = run_cli(
            [
                "predict",
                "--task",
                "synth",
                "--split",
                "test",
                "--adapter",
                generate_run,
                "--readout",
                "constrained",
                "--out",
                mine,
            ],
            tmp_path,
            synth_env(),
            timeout=600,
        )
        assert r.rc == 0, r.err
        served = [json.loads(x)["output"] for x in preds.read_text().splitlines()]
        local = [json.loads(x)["output"] for x in mine.read_text().splitlines()]
        assert sum(a == b for a, b in zip(served, local)) >= 0.99 * len(local)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
