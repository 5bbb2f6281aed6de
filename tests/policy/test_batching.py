"""BatchingPolicy: concurrent episode turns share one generate call, and each caller still gets
exactly its own samples (greedy: the same as a call on its own, left padding included)."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from swe_srl.errors import ConfigError  # noqa: E402
from swe_srl.policy import GenerationConfig, PolicyConfig, Sample, load_policy  # noqa: E402
from swe_srl.policy.base import SerialPolicy  # noqa: E402
from swe_srl.policy.batching import BatchingPolicy, PolicyClosed, runs_in_process, shared_policy  # noqa: E402
from swe_srl.policy.scripted import ScriptedPolicy  # noqa: E402

GREEDY = GenerationConfig(temperature=0.0, max_new_tokens=12)
# Prompts of very different lengths, so a batch of them is left-padded.
CONVERSATIONS = [[{"role": "user", "content": "look " * k + "and fix the failing test"}] for k in (0, 3, 17, 60, 140)]


def _in_threads(fn, args):
    """Call ``fn(arg)`` for every arg from its own thread, all released at once; returns the
    results (or raised exceptions) in order."""
    barrier = threading.Barrier(len(args))

    def call(arg):
        barrier.wait()
        try:
            return fn(arg)
        except Exception as exc:  # noqa: BLE001 - the tests look at what each caller got
            return exc

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(call, args))


class Recorder:
    """A policy that answers each conversation with its own content and records every call."""

    def __init__(self, fail_calls: tuple[int, ...] = (), block: threading.Event | None = None) -> None:
        self.calls: list[tuple[GenerationConfig, list[str]]] = []
        self.fail_calls, self.block = fail_calls, block
        self.started = threading.Event()
        self.active = 0
        self.overlapped = False

    def generate(self, conversations, config):
        self.active += 1
        self.overlapped |= self.active > 1
        try:
            index = len(self.calls)
            self.calls.append((config, [c[-1]["content"] for c in conversations]))
            self.started.set()
            if self.block is not None:
                self.block.wait(10)
            time.sleep(0.01)  # long enough for a second concurrent call to show
            if index in self.fail_calls:
                raise RuntimeError(f"engine failure in call {index}")
            return [[Sample(f"{c[-1]['content']}#{k}", (), (), None, "stop") for k in range(config.n)]
                    for c in conversations]
        finally:
            self.active -= 1


def _ask(text):
    return [[{"role": "user", "content": text}]]


# --------------------------------------------------------------------------- the tiny HF model


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return load_policy(PolicyConfig(backend="hf", model=str(tiny_model_dir), device="cpu"))


def test_greedy_batched_across_threads_equals_each_call_alone(hf):
    import torch

    solo = [hf.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    with BatchingPolicy(hf, max_batch=len(CONVERSATIONS), max_wait_ms=2000) as batching:
        got = _in_threads(lambda c: batching.generate([c], GREEDY)[0], CONVERSATIONS)
        assert (batching.calls, batching.conversations) == (1, len(CONVERSATIONS))  # one padded batch
    assert len({len(s[0].prompt_ids) for s in solo}) == len(CONVERSATIONS)
    for alone, batched in zip(solo, got):
        assert not isinstance(batched, Exception), batched
        (a,), (b,) = alone, batched
        assert b.prompt_ids == a.prompt_ids and b.completion_ids == a.completion_ids
        assert b.text == a.text and b.finish_reason == a.finish_reason
        assert torch.allclose(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=1e-5)


def test_token_id_prompts_batch_among_themselves_never_with_conversations(hf):
    """agent.context=conversation turns ask with token ids: they share a batch with each other
    (one generate_from_ids call), not with chat conversations, and keep their exact ids."""
    prompts = [s[0].prompt_ids + s[0].completion_ids for s in hf.generate(CONVERSATIONS[:3], GREEDY)]
    solo = [hf.generate_from_ids([p], GREEDY)[0][0] for p in prompts]
    with BatchingPolicy(hf, max_batch=5, max_wait_ms=2000) as batching:
        jobs = [("ids", p) for p in prompts] + [("chat", c) for c in CONVERSATIONS[:2]]
        got = _in_threads(lambda job: (batching.generate_from_ids([job[1]], GREEDY) if job[0] == "ids"
                                       else batching.generate([job[1]], GREEDY))[0][0], jobs)
        assert (batching.calls, batching.conversations) == (2, 5)
    for alone, batched, prompt in zip(solo, got, prompts):
        assert not isinstance(batched, Exception), batched
        assert batched.prompt_ids == tuple(prompt) and batched.completion_ids == alone.completion_ids
    assert all(isinstance(s, Sample) for s in got[3:])
    serial = SerialPolicy(hf)
    assert serial.generate_from_ids([prompts[0]], GREEDY)[0][0].completion_ids == solo[0].completion_ids


def test_hf_batch_of_different_lengths_matches_single_calls(hf):
    # The wrapper relies on HFPolicy's left padding being exact: a padded row samples what the
    # prompt alone samples.
    batched = hf.generate(CONVERSATIONS, GREEDY)
    for conversation, group in zip(CONVERSATIONS, batched):
        (alone,) = hf.generate([conversation], GREEDY)[0]
        assert group[0].completion_ids == alone.completion_ids
        assert max(abs(x - y) for x, y in zip(group[0].logprobs, alone.logprobs)) < 1e-5


def test_sampled_turns_keep_their_own_ids_and_logprobs(hf):
    import torch

    config = GenerationConfig(temperature=1.0, max_new_tokens=10)
    with BatchingPolicy(hf, max_batch=3, max_wait_ms=2000) as batching:
        got = _in_threads(lambda c: batching.generate([c], config)[0], CONVERSATIONS[:3])
    for conversation, (sample,) in zip(CONVERSATIONS, got):
        ids = torch.tensor([list(sample.prompt_ids) + list(sample.completion_ids)])
        with torch.no_grad():
            logits = hf.model(ids).logits[0, len(sample.prompt_ids) - 1:-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, ids[0, len(sample.prompt_ids):, None]).squeeze(-1)
        assert sample.prompt_ids == tuple(hf.generate([conversation], GREEDY)[0][0].prompt_ids)
        assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-4)


def test_shared_policy_batches_in_process_engines_only(hf):
    assert runs_in_process(hf)
    batching = shared_policy(hf, 4)
    assert isinstance(batching, BatchingPolicy) and batching.max_batch == 4
    batching.close()
    scripted = ScriptedPolicy(["x"])
    assert not runs_in_process(scripted)
    assert isinstance(shared_policy(scripted, 4), SerialPolicy)


def test_evaluate_tasks_batches_an_in_process_policy_across_workers(hf, tmp_path, monkeypatch):
    import swe_srl.evaluate as evaluate
    from swe_srl.tasks import load_tasks

    seen = []

    def run_instance(policy, task, out, config, *rest):  # no Docker: records who was asked
        seen.append(policy)
        result = evaluate.InstanceResult(instance_id=task.instance_id, exit_reason="submitted")
        folder = evaluate.instance_dir(out, task.instance_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(result.to_dict()))
        return result

    monkeypatch.setattr(evaluate, "run_instance", run_instance)
    tasks = load_tasks("demo")[:2]
    evaluate.evaluate_tasks(hf, tasks, tmp_path / "hf-2", evaluate.EvalConfig(workers=2))
    assert isinstance(seen[-1], BatchingPolicy) and seen[-1].policy is hf and seen[-1].max_batch == 2
    evaluate.evaluate_tasks(hf, tasks, tmp_path / "hf-1", evaluate.EvalConfig(workers=1))
    assert seen[-1] is hf
    scripted = ScriptedPolicy(["x"])
    evaluate.evaluate_tasks(scripted, tasks, tmp_path / "scripted-2", evaluate.EvalConfig(workers=2))
    assert isinstance(seen[-1], SerialPolicy)
    evaluate.evaluate_tasks(hf, tasks, tmp_path / "safe-2", evaluate.EvalConfig(workers=2), thread_safe_policy=True)
    assert seen[-1] is hf


# --------------------------------------------------------------------------- the queue


def test_every_caller_gets_its_own_answers_in_order():
    recorder = Recorder()
    texts = [f"caller-{i}" for i in range(24)]
    with BatchingPolicy(recorder, max_batch=8, max_wait_ms=50) as batching:
        # Callers with one and with several conversations, n = 2.
        got = _in_threads(lambda t: batching.generate(_ask(t) + _ask(t + "/b"), GenerationConfig(n=2)), texts)
    for text, groups in zip(texts, got):
        assert [[s.text for s in g] for g in groups] == [[f"{text}#0", f"{text}#1"], [f"{text}/b#0", f"{text}/b#1"]]
    asked = [t for _, call in recorder.calls for t in call]
    assert sorted(asked) == sorted(texts + [t + "/b" for t in texts])  # each once: none lost, none twice
    assert all(len(call) <= 8 for _, call in recorder.calls)
    assert len(recorder.calls) < len(texts)  # they were batched
    assert not recorder.overlapped  # never two generate calls at once


def test_requests_with_different_configs_are_never_mixed():
    recorder = Recorder()
    configs = [GenerationConfig(temperature=0.0), GenerationConfig(temperature=0.7),
               GenerationConfig(temperature=0.0, stop=("</function>",))]
    jobs = [(f"{i}", configs[i % 3]) for i in range(18)]
    with BatchingPolicy(recorder, max_batch=18, max_wait_ms=100) as batching:
        got = _in_threads(lambda job: batching.generate(_ask(job[0]), job[1]), jobs)
    assert [g[0][0].text for g in got] == [f"{text}#0" for text, _ in jobs]
    by_text = dict(jobs)
    for config, texts in recorder.calls:
        assert all(by_text[t] == config for t in texts)
    assert len(recorder.calls) < len(jobs)


def test_seeded_sampling_is_never_batched_with_other_callers():
    recorder = Recorder()
    seeded = GenerationConfig(temperature=1.0, seed=3)
    with BatchingPolicy(recorder, max_batch=8, max_wait_ms=100) as batching:
        _in_threads(lambda t: batching.generate(_ask(t), seeded), ["a", "b", "c"])
    assert sorted(texts for _, texts in recorder.calls) == [["a"], ["b"], ["c"]]


def test_an_engine_error_reaches_every_caller_of_the_batch_and_the_next_batch_runs():
    recorder = Recorder(fail_calls=(0,))
    with BatchingPolicy(recorder, max_batch=4, max_wait_ms=2000) as batching:
        got = _in_threads(lambda t: batching.generate(_ask(t), GREEDY), ["a", "b", "c", "d"])
        assert len(recorder.calls) == 1
        assert all(isinstance(r, RuntimeError) and "engine failure in call 0" in str(r) for r in got)
        assert batching.generate(_ask("e"), GREEDY)[0][0].text == "e#0"


def test_a_wrong_number_of_groups_fails_the_batch_instead_of_misrouting():
    class Short(Recorder):
        def generate(self, conversations, config):
            return super().generate(conversations, config)[:-1]

    with BatchingPolicy(Short(), max_batch=2, max_wait_ms=2000) as batching:
        got = _in_threads(lambda t: batching.generate(_ask(t), GREEDY), ["a", "b"])
    assert all(isinstance(r, Exception) and "1 groups for 2 conversations" in str(r) for r in got)


def test_close_fails_waiting_callers_lets_the_running_batch_finish():
    release = threading.Event()
    recorder = Recorder(block=release)
    batching = BatchingPolicy(recorder, max_batch=1, max_wait_ms=0)
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(batching.generate, _ask("running"), GREEDY)
        assert recorder.started.wait(5)
        queued = [pool.submit(batching.generate, _ask(t), GREEDY) for t in ("q1", "q2")]
        deadline = time.monotonic() + 5
        while len(batching._queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        closing = pool.submit(batching.close)
        for future in queued:  # failed at once, while the running batch still runs
            with pytest.raises(PolicyClosed, match="closed before this request ran"):
                future.result(timeout=5)
        assert not running.done() and not closing.done()
        release.set()
        assert running.result(timeout=5)[0][0].text == "running#0"
        closing.result(timeout=5)
    assert [texts for _, texts in recorder.calls] == [["running"]]
    with pytest.raises(PolicyClosed):
        batching.generate(_ask("late"), GREEDY)
    batching.close()  # idempotent


def test_wait_fraction_holds_the_batch_for_callers_back_from_their_tools():
    class Slow(Recorder):
        def generate(self, conversations, config):
            time.sleep(0.6)  # the window with wait_fraction 1.0
            return super().generate(conversations, config)

    def episode(name, pause):  # turn, a tool call of ``pause`` seconds, turn
        batching.generate(_ask(f"{name}1"), GREEDY)
        time.sleep(pause)
        batching.generate(_ask(f"{name}2"), GREEDY)

    for fraction, second_turns in ((1.0, [["a2", "b2"]]), (0.0, [["a2"], ["b2"]])):
        recorder = Slow()
        with BatchingPolicy(recorder, max_batch=2, max_wait_ms=50, wait_fraction=fraction) as batching:
            _in_threads(lambda job: episode(*job), [("a", 0.0), ("b", 0.25)])
        assert recorder.calls[0][1] in (["a1", "b1"], ["b1", "a1"])
        assert [texts for _, texts in recorder.calls[1:]] == second_turns


def test_the_worker_stops_when_idle_and_restarts_on_demand():
    batching = BatchingPolicy(Recorder(), max_wait_ms=0, idle_s=0.05)
    assert batching.generate(_ask("a"), GREEDY)[0][0].text == "a#0"
    worker = batching._worker
    assert worker is not None
    worker.join(5)
    assert not worker.is_alive() and batching._worker is None
    assert batching.generate(_ask("b"), GREEDY)[0][0].text == "b#0"
    batching.close()


def test_no_conversations_no_call_and_bad_settings_are_config_errors():
    recorder = Recorder()
    with BatchingPolicy(recorder) as batching:
        assert batching.generate([], GREEDY) == []
    assert recorder.calls == []
    with pytest.raises(ConfigError):
        BatchingPolicy(recorder, max_batch=0)
    with pytest.raises(ConfigError):
        BatchingPolicy(recorder, max_wait_ms=-1)
    with pytest.raises(ConfigError):
        BatchingPolicy(recorder, wait_fraction=2)


# --------------------------------------------------------------------------- OpenAI: no queue needed


def test_openai_policy_serves_concurrent_callers_each_their_own_answer(hf, tiny_model_dir):
    # A server batches concurrent requests itself, so the client is called from many threads
    # at once with no wrapper: each caller must get the answer to its own prompt.
    from tests.policy.test_openai import _Server

    with _Server(hf) as server:
        client = load_policy(PolicyConfig(backend="openai", model=str(tiny_model_dir), base_url=server.url))
        got = _in_threads(lambda c: client.generate([c], GREEDY), CONVERSATIONS * 2)
    for conversation, groups in zip(CONVERSATIONS * 2, got):
        assert not isinstance(groups, Exception), groups
        (alone,) = hf.generate([conversation], GREEDY)[0]
        assert groups[0][0].completion_ids == alone.completion_ids
        assert groups[0][0].prompt_ids == alone.prompt_ids
