"""The recursive decoder: exact with the oracle, batch-invariant with a real model, unbreakable by any output."""
import random

import pytest

from retune.decoding.recursive import (ERROR_KINDS, Limits, Trace, decode, decode_one_by_one, load_traces, parse_call,
                                       save_traces)
from retune.decoding.generators import Generation, HFGenerator, OracleGenerator, oracle_targets
from retune.tasks import METHODS, TASKS, get_method, get_task

# far beyond every training distribution (addition 15, dp 5, parity 21)
SIZES = {"addition": (1, 2, 16, 33, 60), "dp": (1, 2, 6, 17, 30), "parity": (1, 2, 22, 41, 60)}


def problems_of(task, sizes, per_size, seed=0):
    rng = random.Random(seed)
    return [task.sample(s, rng) for s in sizes for _ in range(per_size)]


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("method", METHODS)
def test_oracle_solves_every_size(name, method):
    task = get_task(name)
    problems = problems_of(task, SIZES[name], 2)
    traces = decode(task, problems, method, OracleGenerator.for_problems(task, problems, method))
    assert [t.outcome for t in traces] == ["correct"] * len(problems)
    for t, p in zip(traces, problems):
        assert t.predicted == t.expected
        if method == "retuning":  # the decoded tree is the oracle tree, node for node
            oracle = [n.prompt for n, _ in task.tree(p).walk()]
            assert [n.prompt for n in t.root.walk()] == oracle
            assert all(n.returns == [c.answer for c in n.children] for n in t.root.walk())
        if method == "no_carryover":  # calls are written, never solved
            assert t.root.children == [] and all(r is None for r in t.root.returns)


class Recording:
    """A generator that remembers every context it was asked to continue."""

    def __init__(self, inner):
        self.inner, self.contexts = inner, []

    def generate(self, contexts, max_new_tokens):
        self.contexts += contexts
        return self.inner.generate(contexts, max_new_tokens)


def test_dp_top_level_ends_at_the_second_return():
    """Two top-level contexts: after the second call returns nothing more is generated at the top, and the answer
    is that return."""
    task = get_task("dp")
    p = [3, -1, 4, 1, -5]
    recorder = Recording(OracleGenerator.for_problems(task, [p], "retuning"))
    t = decode(task, [p], "retuning", recorder)[0]
    assert t.correct and len(t.root.calls) == 2 and len(t.root.children) == 2 and len(t.root.turns) == 2
    assert t.root.returns == [c.answer for c in t.root.children] and t.root.answer == t.root.returns[1]
    top = [c for c in recorder.contexts if c.startswith(task.top_context(p, "retuning"))]
    assert len(top) == 2 and t.root.context.count("Return: ") == 1
    # the answer is the second call's return, whatever it is
    chosen_top = t.root.children[1].context.rsplit("Append", 1)[0]
    wrong = Scripted(lambda c: "Append 1 if False else 2.\nAnswer: [2, 2, 2, 2, 1]" if c == chosen_top
                     else recorder.inner.targets.get(c, ""))
    t = decode(task, [p], "retuning", wrong)[0]
    assert (t.predicted, t.correct, t.error, t.root.answer) == ([2, 2, 2, 2, 1], False, None, "[2, 2, 2, 2, 1]")
    # an unreadable return ends the problem at the node that wrote it, not at the top level
    garbled = Scripted(lambda c: "Append 1 if False else 2.\nAnswer: [1, x]" if c == chosen_top
                       else recorder.inner.targets.get(c, ""))
    t = decode(task, [p], "retuning", garbled)[0]
    assert t.error == "unparseable_answer" and t.root.error is None and t.root.children[1].error == t.error


def test_dp_oracle_is_exact_for_every_length_up_to_30():
    task = get_task("dp")
    problems = problems_of(task, range(1, 31), 3)
    traces = decode(task, problems, "retuning", OracleGenerator.for_problems(task, problems, "retuning"))
    assert [t.outcome for t in traces] == ["correct"] * len(problems)
    assert all(len(t.root.turns) == 2 for t in traces)


def test_parse_call():
    assert parse_call("Carry 0, Output 3") == (None, None)
    assert parse_call("Call: 1 + 2\n") == ("1 + 2", None)
    assert parse_call("Some prose. Call: 1 + 2\n") == ("1 + 2", None)
    assert parse_call("Call: Call: 1 + 2\n") == ("Call: 1 + 2", None)  # a strange prompt, still a call
    assert parse_call("Call: 1 + 2") == (None, "call_without_newline")
    assert parse_call("Call: 1 + 2\nmore") == (None, "text_after_call")


class Scripted:
    """A generator answering from a function of the context (tests plant faults with it)."""

    def __init__(self, answer):
        self.answer = answer

    def generate(self, contexts, max_new_tokens):
        out = []
        for c, limit in zip(contexts, max_new_tokens):
            text = self.answer(c)
            stopped = not isinstance(text, tuple)
            text = text[0] if isinstance(text, tuple) else text
            out.append(Generation(text, stopped, len(c), len(text) + stopped))
        return out


def addition_5():
    task = get_task("addition")
    problem = ("12345", "67890")
    return task, problem, OracleGenerator.for_problems(task, [problem], "retuning")


def test_named_error_kinds():
    task, p, oracle = addition_5()

    def one(generator, limits=None):
        return decode(task, [p], "retuning", generator, limits)[0]

    def but(context_test, text):
        return Scripted(lambda c: text if context_test(c) else oracle.targets.get(c, ""))

    top = task.top_context(p, "retuning")
    assert one(but(lambda c: c == top, "Call: 2345 + 7890")).error == "call_without_newline"
    assert one(but(lambda c: c == top, "Call: 2345 + 7890\nx")).error == "text_after_call"
    assert one(but(lambda c: c == top, "Call: 12345 + 67890\n")).error == "repeated_call"
    assert one(but(lambda c: c.startswith("5 + 0"), "Call: 12345 + 67890\n")).error == "repeated_call"  # an ancestor
    assert one(but(lambda c: c.endswith("Answer: ") and c.startswith(top), "Carry 9")).error == "unparseable_answer"
    assert one(oracle, Limits(depth=2)).error == "depth_limit"
    assert one(oracle, Limits(new_tokens=5)).error == "token_limit"
    assert one(oracle, Limits(contexts=3)).error == "tree_limit"
    assert one(Scripted(lambda c: ("Carry 0, Out",))).error == "token_limit"  # the backend says: no EOS
    counter = iter(range(10**6))
    endless = one(Scripted(lambda c: f"Call: {next(counter)}\n" if c.startswith(top) else "x"))
    assert endless.error == "call_limit" and len(endless.root.calls) == 4
    failed = one(oracle, Limits(depth=2))
    assert [n.error for n in failed.root.walk()] == [None, None, "depth_limit"]  # where it stopped


def test_limits_are_parameters():
    task, p, oracle = addition_5()
    assert decode(task, [p], "retuning", oracle, Limits(depth=4))[0].correct  # the tree is 4 deep
    counter = iter(range(10**6))
    top = task.top_context(p, "retuning")
    t = decode(task, [p], "retuning", Scripted(lambda c: f"Call: {next(counter)}\n" if c.startswith(top) else "x"),
               Limits(calls=7))[0]
    assert t.error == "call_limit" and len(t.root.calls) == 7


ADVERSARIAL = ["", "\n", "Call: ", "Call:", "Call: \n", "Call: x", "Call: Call: Call: 1 + 2\n", "Call: 1 + 2\n\n",
               "<unk>", "<unk><unk>\n", "</s>", "<pad>", "Ω≈ç√∫ 😀", "\ud800", "\x00", "Answer: ", "\nAnswer: ",
               "Carry 1, Output " + "9" * 5000, "9" * 5000, "[1, 2, 1]", "[]", "[", "Return: 1\nAnswer: 1",
               "Carry 1, Output 00", "Carry 2, Output 1", "0", "1", "2", "-1", "If there is only 1 item.",
               "Call: What is the parity of [1]?\n", "Call: 1 + 1\n", "Call: Create dp array [1]\n", "x" * 20000]


class Adversary:
    """Random and adversarial strings: endless calls, no newlines, nested calls, huge, unicode, special tokens;
    sometimes a correct answer, sometimes a claim that the limit was hit."""

    def __init__(self, oracle, seed=0):
        self.oracle, self.rng, self.seen = oracle, random.Random(seed), 0

    def text(self, context):
        r = self.rng.random()
        if r < 0.3:
            return self.oracle.targets.get(context, "")
        if r < 0.5:
            return f"Call: {self.rng.randrange(10**9)}\n"  # a fresh sub-problem every time: endless calls
        if r < 0.6:
            prompt = context.split("\nSolution: ")[0]
            return f"Call: {prompt}\n"  # a call to itself
        if r < 0.7:
            return "".join(chr(self.rng.randrange(1, 0x2FFF)) for _ in range(self.rng.randrange(0, 60)))
        return self.rng.choice(ADVERSARIAL)

    def generate(self, contexts, max_new_tokens):
        self.seen += len(contexts)
        return [Generation(t := self.text(c), self.rng.random() > 0.05, len(c), len(t) + 1) for c in contexts]


def test_fuzz_nothing_crashes_every_failure_is_named(tmp_path):
    seen, traces = 0, []
    for name in TASKS:
        task = get_task(name)
        for method, round_ in [(m, r) for m in METHODS for r in range(3)]:
            problems = problems_of(task, (1, 3, 8, 12), 10, seed=round_)
            adversary = Adversary(OracleGenerator.for_problems(task, problems, method), seed=len(traces))
            out = decode(task, problems, method, adversary)
            seen += adversary.seen
            assert len(out) == len(problems)
            for t in out:
                assert t.outcome in ("correct", "wrong_answer") + ERROR_KINDS
                assert t.correct == (t.outcome == "correct")
                if t.error:  # the node where decoding stopped says why
                    assert [n.error for n in t.root.walk() if n.error] == [t.error]
                if get_method(method).recursive:
                    assert max(n.depth for n in t.root.walk()) <= task.depth_limit(t.size)
                    assert all(len(n.calls) <= 4 for n in t.root.walk())
            traces += out
    assert seen >= 2000
    outcomes = {t.outcome for t in traces}
    assert {"correct", "repeated_call", "unparseable_answer", "token_limit"} <= outcomes
    save_traces(tmp_path / "fuzz.jsonl", traces)  # unicode, surrogates and all
    assert load_traces(tmp_path / "fuzz.jsonl") == traces


def test_trace_round_trip(tmp_path):
    task = get_task("addition")
    problems = problems_of(task, (1, 4), 2)
    traces = decode(task, problems, "retuning", OracleGenerator.for_problems(task, problems, "retuning"))
    traces += decode(task, problems, "retuning", OracleGenerator({}))  # failures too
    save_traces(tmp_path / "t.jsonl", traces)
    loaded = load_traces(tmp_path / "t.jsonl")
    assert loaded == traces and isinstance(loaded[0], Trace)
    assert loaded[0].root.to_dict() == traces[0].root.to_dict()
    assert loaded[0].problem == list(problems[0])  # the JSON form: a tuple becomes a list


def test_traces_count_tokens_and_contexts():
    task, p, oracle = addition_5()
    t = decode(task, [p], "retuning", oracle)[0]
    examples = task.examples(p, "retuning")
    assert t.contexts == 5
    assert t.tokens_out == sum(len(e.output) + 1 for e in examples)  # characters + EOS
    assert t.tokens_in == sum(len(e.input) for e in examples)
    assert t.root.context == examples[1].input + examples[1].output  # pre-order: the root's two turns first


# --- a real model --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_batched_equals_one_by_one_parity_model(parity_model):
    """A model that really calls (trained on lengths 1-3), mixed sizes 1-7 in one batch: same traces."""
    model, tok = parity_model
    task = get_task("parity")
    problems = problems_of(task, (3, 1, 7, 2, 5, 4, 6), 3, seed=3)
    generator = HFGenerator(model, tok, batch_size=8)  # several chunks per step, too
    batched = decode(task, problems, "retuning", generator)
    assert batched == decode_one_by_one(task, problems, "retuning", generator)
    assert sum(len(n.calls) for t in batched for n in t.root.walk()) > len(problems)  # it does call
    assert 0 < sum(t.correct for t in batched) < len(problems)  # right in distribution, wrong beyond


@pytest.mark.parametrize("method", ["retuning", "no_carryover", "baseline", "inline"])
def test_batched_equals_one_by_one_random_model(method):
    """Random weights, oracle tokens forced with holes left to the model: oracle text mixed with model text,
    calls to unknown sub-problems, limits hit; mixed sizes 1-8 and batches cut in chunks."""
    from retune.models.causal_lm import char_tokenizer, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64}, tok)
    task = get_task("addition")
    problems = problems_of(task, (8, 1, 3, 5, 2), 2, seed=5)
    generator = HFGenerator(model, tok, batch_size=4, forced=oracle_targets(task, problems, method), holes=11)
    limits = Limits(new_tokens=48)
    batched = decode(task, problems, method, generator, limits)
    assert batched == decode_one_by_one(task, problems, method, generator, limits)
    assert len({t.outcome for t in batched}) > 1


@pytest.mark.slow
def test_hf_forced_without_holes_is_the_oracle():
    from retune.models.causal_lm import char_tokenizer, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "intermediate_size": 32}, tok)
    task = get_task("dp")
    problems = problems_of(task, (1, 4, 7), 1)
    targets = oracle_targets(task, problems, "retuning")
    via_model = decode(task, problems, "retuning", HFGenerator(model, tok, forced=targets))
    via_oracle = decode(task, problems, "retuning", OracleGenerator(targets))
    assert via_model == via_oracle and all(t.correct for t in via_model)


def test_decoded_text_round_trips_special_tokens():
    from retune.models.causal_lm import char_tokenizer, tiny_llama

    tok = char_tokenizer()
    generator = HFGenerator(tiny_llama({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                        "intermediate_size": 32}, tok), tok)
    text = "12 + 34\nSolution: Call: 2 + 4\n<unk> é"
    assert generator.decode_ids(generator.encode(text)) == "12 + 34\nSolution: Call: 2 + 4\n<unk> <unk>"
