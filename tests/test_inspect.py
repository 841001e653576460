"""The trace inspector on real decoder traces: an oracle that errs on purpose at known places."""
import html
import re

import pytest

from retune.decoding.recursive import decode, load_traces, save_traces
from retune.decoding.generators import Generation, OracleGenerator
from retune.evaluation.scoring import first_departure, oracle_tree
from retune.analysis.inspector import (Inspector, _LiveOrStatic, export_failures, export_html, first_wrong, inspector,
                                       oracle_of, pick_failures, select, static_view, trace_html, tree_depth, visible)
from retune.tasks import get_task

from _planted import planted


class Faulty(OracleGenerator):
    """The oracle, except for two planted mistakes: a wrong combination in the `47 + 38` sub-problem (depth 1
    of 147 + 238), and a call without its newline at the top of `501 + 600`; plus markup in a model output."""

    def generate(self, contexts, max_new_tokens):
        out = super().generate(contexts, max_new_tokens)
        for i, c in enumerate(contexts):
            if c.startswith("47 + 38\nSolution: ") and "Return: " in c:
                out[i] = Generation("Carry 0, Output 75", True, 1, 1)
            if c == "501 + 600\nSolution: ":
                out[i] = Generation("Call: 01 + 00 <script>x</script>", True, 1, 1)
        return out


@pytest.fixture(scope="module")
def traces():
    task = get_task("addition")
    problems = [("147", "238"), ("12", "34"), ("501", "600")]
    return decode(task, problems, "retuning", Faulty.for_problems(task, problems, "retuning"), progress=False)


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_correct_trace_has_no_red_mark(traces):
    page = trace_html(traces[1])
    assert "correct" in page and "first error" not in page and "#c62828" not in page
    assert page.count("<details") == 2 * 2  # two nodes, each with its folded full context


def test_first_wrong_node_matches_evaluate_and_is_marked(traces):
    wrong = traces[0]
    node, turn, expected = first_wrong(wrong.root, oracle_of(wrong))
    assert (node.prompt, node.depth, turn, expected) == ("47 + 38", 1, 1, "Carry 0, Output 85")
    departure = first_departure(wrong, oracle_tree(get_task("addition"), wrong.problem, "retuning"))
    assert (departure.kind, departure.depth) == ("wrong_combination", 1)
    page = trace_html(wrong)
    assert page.count("(first error)") == 1
    assert "wrong_combination</b> at depth 1" in page
    text = text_of(page)
    assert "generation 2 (first error)" in text and "Carry 0, Output 75" in text and "Carry 0, Output 85" in text
    # the path from the root to the wrong node is unfolded; the correct leaf below it is folded
    assert re.search(r'<details open[^>]*>\s*<summary[^>]*>.{0,80}depth 1', page)
    assert re.search(r"<details style[^>]*>\s*<summary[^>]*>.{0,80}depth 2", page)


def test_decoder_errors_and_model_markup(traces):
    page = trace_html(traces[2])
    assert traces[2].error == "call_without_newline"
    assert "call_without_newline" in page and "<script>" not in page and "&lt;script&gt;" in page
    node, turn, _ = first_wrong(traces[2].root, oracle_of(traces[2]))
    assert node.depth == 0 and turn == 0


def test_dict_form_and_jsonl_round_trip(traces, tmp_path):
    save_traces(tmp_path / "t.jsonl", traces)
    loaded = load_traces(tmp_path / "t.jsonl")
    assert [trace_html(t) for t in loaded] == [trace_html(t) for t in traces]
    assert trace_html(traces[0].to_dict()) == trace_html(traces[0])


def test_traces_the_oracle_cannot_rebuild_still_render(traces):
    d = traces[0].to_dict()
    d["problem"] = "not a problem"
    page = trace_html(d)
    assert "147 + 238" in page  # no oracle: no red turn, but the tree and its error are shown


def test_no_carryover_and_two_call_tasks_render():
    task = get_task("dp")
    problems = [[3, -1, 2]]
    t = decode(task, problems, "retuning", OracleGenerator.for_problems(task, problems, "retuning"), progress=False)
    page = trace_html(t[0])
    assert t[0].correct and text_of(page).count("Return: ") >= 2
    t = decode(task, problems, "no_carryover", OracleGenerator.for_problems(task, problems, "no_carryover"),
               progress=False)
    assert "nothing returned" in trace_html(t[0])


def test_export_html_is_a_standalone_page(traces, tmp_path):
    path = export_html(traces, tmp_path / "out" / "traces.html", title="addition failures")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and page.count('class="retune-trace"') == 3
    assert export_html(traces[0], tmp_path / "one.html").read_text().count('class="retune-trace"') == 1


def test_inspector_follows_the_dropdowns(traces):
    assert len(select(traces, size=3)) == 2 and len(select(traces, only_failures=True)) == 2
    ui = Inspector(traces)
    assert ui.task.options == ("addition",) and ui.size.options == (2, 3)
    assert ui.current is traces[1] and "correct" in ui.view.value
    ui.size.value = 3
    assert len(ui.problem.options) == 2 and ui.current is traces[0] and "(first error)" in ui.view.value
    ui.problem.value = 2  # a problem's value is its position among all traces
    assert ui.current is traces[2]
    ui.only_failures.value = True
    assert ui.size.options == (3,) and "2 failed" in ui.count.value
    ui = Inspector(traces, only_failures=True)
    assert ui.current is traces[0]
    assert Inspector([]).view.value == "<i>no trace matches</i>"


def test_selection_follows_the_problem_when_the_filter_changes(traces):
    ui = Inspector(traces, only_failures=True)
    ui.size.value = 3
    ui.problem.value = 2
    assert ui.current is traces[2]
    ui.only_failures.value = False  # the correct problem of size 3 joins the list: the selection stays put
    assert len(ui.problem.options) == 2 and ui.current is traces[2] and "501 + 600" in ui.view.value
    ui.only_failures.value = True
    assert ui.current is traces[2]


def test_inspector_is_one_output_live_or_static(traces, capsys):
    import ipywidgets

    widget = inspector(traces)
    assert isinstance(widget, ipywidgets.VBox)
    ui = Inspector(traces)
    bundle = _LiveOrStatic(ui, static_view(ui))._repr_mimebundle_()
    # the live widget where a widget manager runs, the first failure as static HTML elsewhere: never both at once
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Static view of the first failing problem" in bundle["text/html"]
    assert "147 + 238" in bundle["text/html"] and "(first error)" in bundle["text/html"]


def test_whitespace_output_is_visible(traces):
    d = traces[1].to_dict()
    d["correct"], d["nodes"][0]["turns"][-1] = False, " \n"  # the root is the first node
    text = text_of(trace_html(d))
    assert "\u2423\u23ce" in text and "2 chars" in text
    assert visible("") == "(empty)" and visible(" a b\t") == "\u2423a b\u21e5" and visible("a b") == "a b"


def failing_traces():
    """Failures of every task x method; Re-Tuning's fail at the leaves of trees of several depths."""
    import random

    out = []
    for name in ("addition", "parity"):
        task = get_task(name)
        problems = [task.sample(s, random.Random(s)) for s in (2, 3, 4) for _ in range(2)]
        for method in ("baseline", "retuning"):
            out += planted(name, method, problems)
    return out


def test_failures_page_covers_each_task_and_method_retuning_first_at_several_depths(tmp_path):
    traces = failing_traces()
    chosen = pick_failures(traces, per_group=2)
    groups = [(t.task, t.method) for t in chosen]
    assert groups == [("addition", "retuning")] * 2 + [("addition", "baseline")] * 2 + \
        [("parity", "retuning")] * 2 + [("parity", "baseline")] * 2
    retuning = [t for t in chosen if t.method == "retuning"]
    assert all(tree_depth(t) >= 1 for t in retuning)  # nested trees, not single contexts
    assert len({tree_depth(t) for t in retuning if t.task == "addition"}) == 2  # two depths
    page = export_failures(traces, tmp_path / "failing.html", per_group=2).read_text()
    assert "chosen to cover the depths of their call trees" in page and 'class="retune-choice"' in page
    assert page.count('class="retune-trace"') == 8
