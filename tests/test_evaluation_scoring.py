"""The scoring rules of `fac-eval` on hand-made replies with known scores: multiple choice, answer matching,
refusal, IFEval (lm-eval's checkers), function calls by BFCL's and ACEBench's rules (right, wrong, malformed,
parallel), judge answers, the overall
scores of the paper, and `fac-eval score` on a saved predictions file."""

import json

import pytest

from tests.evaluation_data import (
    TRIANGLE_TOOLS,
    TRIANGLE_TRUTH,
    WEATHER_PARALLEL_TRUTH,
    WEATHER_SINGLE_TRUTH,
    WEATHER_TOOLS,
    speechfc_record,
)
from transformers_fac.evaluation import scoring
from transformers_fac.evaluation.acebench_calls import check_acebench_calls
from transformers_fac.evaluation.benchmarks import BENCHMARKS, get_benchmark
from transformers_fac.evaluation.function_calls import check_function_calls, parse_calls
from transformers_fac.evaluation.judging import RUBRICS
from transformers_fac.evaluation.report import overall_score
from transformers_fac.evaluation.vstyle import judge_prompt, parse_score, weighted_score


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("The answer is (B).", "B"),
        ("C", "C"),
        ("d) Jupiter", "D"),
        ("I would choose option A because it is larger.", "A"),
        ("答案是C", "C"),
        ("**B.** The heart pumps blood.", "B"),
        ("I am not sure about this one.", None),
    ],
)
def test_extract_choice(reply, letter):
    assert scoring.extract_choice(reply) == letter


def test_multiple_choice_guesses_like_voicebench():
    assert scoring.choice_correct("The answer is (B).", "B", "1") == (True, False)
    assert scoring.choice_correct("It is (A).", "B", "1") == (False, False)
    first = scoring.choice_correct("No idea.", "B", "item-7")
    assert first[1] is True and scoring.choice_correct("No idea.", "B", "item-7") == first  # seeded by the id


def test_mmau_choice_and_instruction():
    choices = ["Man", "Woman", "Child", "Robot"]
    assert scoring.mmau_choice("(B) Woman", choices) == "Woman"
    assert scoring.mmau_choice("It sounds like a child speaking.", choices) == "Child"
    assert scoring.mmau_choice("A man or a woman.", choices) is None  # two choices named, no letter: no pick
    instruction = scoring.mmau_instruction("Who is speaking?", choices)
    assert instruction.splitlines() == [
        "Who is speaking? Choose the correct option from the following options:",
        "(A)Man",
        "(B)Woman",
        "(C)Child",
        "(D)Robot",
    ]


def test_answer_matching_and_refusal():
    assert scoring.contains_answer("The capital is Paris, of course.", ["paris"])
    assert scoring.contains_answer("Café au lait", "cafe")
    assert not scoring.contains_answer("Parisian food", ["Paris"])
    assert not scoring.contains_answer("I don't know", [""])
    refusals = ["I'm sorry, but I can't help with that.", "", "这是违法的，我不能帮你。", "As an AI, I won't do that."]
    assert all(scoring.is_refusal(reply) for reply in refusals)
    assert not scoring.is_refusal("Sure, here are the steps: first, gather the materials.")


def test_ifeval_through_lm_eval():
    fields = {
        "key": 1,
        "prompt": "Describe rain in fewer than 6 words, all lowercase.",
        "instruction_id_list": ["change_case:english_lowercase", "length_constraints:number_words"],
        "kwargs": [{}, {"relation": "less than", "num_words": 6}],
    }
    followed = scoring.ifeval_flags("soft grey rain falls", fields)
    assert followed["prompt_level_strict_acc"] is True and followed["inst_level_strict_acc"] == [True, True]
    broken = scoring.ifeval_flags("Soft grey rain falls on the quiet town", fields)
    assert broken["inst_level_strict_acc"] == [False, False]
    summary = scoring.ifeval_summary([followed, broken])
    assert summary["prompt_strict"] == 50.0 and summary["instruction_strict"] == 50.0
    assert summary["score"] == pytest.approx(50.0)


def _call(arguments: dict, name: str = "calculate_triangle_area") -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call><|im_end|>"


def test_function_calls_right_wrong_and_malformed():
    tools, truth = json.dumps(TRIANGLE_TOOLS), json.dumps(TRIANGLE_TRUTH)
    right = check_function_calls(_call({"base": 10, "height": 5, "unit": "Units"}), tools, truth, parallel=False)
    assert right == {"correct": True, "malformed": False, "reason": None}
    assert check_function_calls(_call({"base": 10, "height": 5}), tools, truth, False)["correct"]  # unit is optional
    wrong_value = check_function_calls(_call({"base": 10, "height": 6}), tools, truth, False)
    assert not wrong_value["correct"] and "height" in wrong_value["reason"]
    wrong_type = check_function_calls(_call({"base": "10", "height": 5}), tools, truth, False)
    assert "wrong type" in wrong_type["reason"]
    wrong_name = check_function_calls(_call({"base": 10, "height": 5}, name="area"), tools, truth, False)
    assert "instead of" in wrong_name["reason"]
    missing = check_function_calls(_call({"base": 10}), tools, truth, False)
    assert "missing required" in missing["reason"]
    malformed = check_function_calls('<tool_call>{"name": "calculate_triangle_area", "arg', tools, truth, False)
    assert malformed["correct"] is False and parse_calls("<tool_call>[1, 2]</tool_call>") is None
    assert check_function_calls("<tool_call>{oops}</tool_call>", tools, truth, False)["malformed"] is True
    assert "0 calls" in check_function_calls("It is 25 square units.", tools, truth, False)["reason"]


def test_parallel_function_calls_in_any_order():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    truth = [{"weather": {"city": ["Paris"]}}, {"weather": {"city": ["New York", "NYC"]}}]
    reply = _call({"city": "new york"}, "weather") + _call({"city": "Paris"}, "weather")
    assert check_function_calls(reply, tools, truth, parallel=True)["correct"]
    twice = _call({"city": "Paris"}, "weather") + _call({"city": "Paris"}, "weather")
    assert not check_function_calls(twice, tools, truth, parallel=True)["correct"]


def _weather(arguments: dict, name: str = "get_weather") -> str:
    return _call(arguments, name)


@pytest.mark.parametrize(
    "reply, correct, reason",
    [
        (_weather({"city": "Beijing, China", "days": 3}), True, None),  # the expected string is contained
        (_weather({"city": "Beijing", "days": 5}), True, None),  # numbers: type only, as the official scorer
        (_weather({"city": "Beijing", "days": 3, "units": ["Celsius"]}), False, "unexpected parameter 'units'"),
        (_weather({"city": "Shanghai", "days": 3}), False, "'city' = 'Shanghai' is not the expected value"),
        (_weather({"city": "Beijing", "days": "3"}), False, "'days' has the wrong type (str)"),
        (_weather({"days": 3}), False, "missing required parameter 'city'"),
        (_weather({"city": "Beijing"}, name="forecast"), False, "called {'forecast': 1}"),
        ("It will be sunny.", False, "0 calls, expected 1"),
        ("<tool_call>{not json}</tool_call>", False, "0 calls, expected 1"),  # skipped, not malformed
        ('<tool_call>{"name": "get_weather"}</tool_call>', False, "a <tool_call> block is not a valid call"),
        ('<tool_call>{"name": "get_weather", "arguments": "city=Beijing"}</tool_call>', False, "not a valid call"),
    ],
)
def test_acebench_single_calls_right_wrong_and_malformed(reply, correct, reason):
    result = check_acebench_calls(reply, json.dumps(WEATHER_TOOLS), json.dumps(WEATHER_SINGLE_TRUTH))
    assert result["correct"] is correct and result["malformed"] is (reason is not None and "valid call" in reason)
    assert (result["reason"] is None) if reason is None else (reason in result["reason"])


def test_acebench_parallel_calls_lists_objects_and_candidates():
    tools = json.dumps(WEATHER_TOOLS)
    both = _weather({"city": "shanghai", "days": 3}) + _weather({"city": "Beijing", "days": 3})
    assert check_acebench_calls(both, tools, json.dumps(WEATHER_PARALLEL_TRUTH))["correct"]  # any order
    twice = _weather({"city": "Beijing", "days": 3}) + _weather({"city": "Beijing", "days": 3})
    assert "'city' = 'Beijing'" in check_acebench_calls(twice, tools, WEATHER_PARALLEL_TRUTH)["reason"]
    one = check_acebench_calls(_weather({"city": "Beijing", "days": 3}), tools, WEATHER_PARALLEL_TRUTH)
    assert one["reason"] == "1 calls, expected 2"
    lists = [{"get_weather": {"city": "Paris", "units": ["celsius", "Kelvin"]}}]
    assert check_acebench_calls(_weather({"city": "Paris", "units": ["Celsius", "kelvin"]}), tools, lists)["correct"]
    assert not check_acebench_calls(_weather({"city": "Paris", "units": ["kelvin", "celsius"]}), tools, lists)[
        "correct"
    ]
    objects = [{"get_weather": {"city": "Paris", "filters": {"wind": "strong", "rain": True}}}]
    right = _weather({"city": "Paris", "filters": {"wind": "strong wind", "rain": "true"}})
    assert check_acebench_calls(right, tools, objects)["correct"]
    extra_key = _weather({"city": "Paris", "filters": {"wind": "strong", "rain": True, "snow": False}})
    assert not check_acebench_calls(extra_key, tools, objects)["correct"]
    candidates = [{"get_weather": {"city": "Peking"}}, {"get_weather": {"city": "Beijing"}}]
    assert check_acebench_calls(_weather({"city": "Beijing"}), tools, candidates)["correct"]  # the second candidate


@pytest.mark.parametrize(
    "rubric, answer, score",
    [
        ("open_1_5", "4", 4.0),
        ("open_1_5", "Score: 9", None),
        ("yes_no", "Yes.", 100.0),
        ("yes_no", "no", 0.0),
        ("yes_no", "Maybe", None),
        ("chat_1_10", "Helpful and precise. Rating: [[7]]", 70.0),
        ("chat_1_10", "Rating: 7", None),
        ("correct_incorrect", "Matches the standard answer, the score is [Correct]", 100.0),
        ("correct_incorrect", "the score is [Incorrect]", 0.0),
        ("math_1_5", "答案正确但无过程，得分是[4]", 80.0),
        ("json_judgment", '{"analysis": "same city", "judgment": "correct"}', 100.0),
        ("json_judgment", "```json\n{'judgment': 'correct'}\n```", None),
    ],
)
def test_judge_answers_are_parsed_or_counted_unparseable(rubric, answer, score):
    assert RUBRICS[rubric].parse(answer) == score


@pytest.mark.parametrize(
    "answer, score",
    [
        ("Slow as asked, but robotic. Final score: [[4]]", 4.0),
        ("Step 5 gives [[3]]; after step 6: Final score: [[5]]", 5.0),  # the last one counts
        (" 2 ", 2.0),
        ("Final score: [[9]]", None),  # off the 1-5 scale
        ("Final score: 4", None),
        ("", None),
    ],
)
def test_vstyle_judge_scores_are_parsed_or_unparseable(answer, score):
    assert parse_score(answer) == score


def test_vstyle_weighted_score_and_prompt():
    scores = [("acoustic_attributes/composite_properties", 5.0), ("acoustic_attributes/age", 2.0)]
    assert weighted_score(scores) == pytest.approx((5 * 0.125 + 2 * 0.125 / 6) / (0.125 + 0.125 / 6))
    scores += [("instruction/style", 1.0), ("instruction/style", 3.0), ("role_play/scenario", None)]
    expected = (5 * 0.125 + 2 * 0.125 / 6 + 2 * 0.25 / 3) / (0.125 + 0.125 / 6 + 0.25 / 3)
    assert weighted_score(scores) == pytest.approx(expected) and weighted_score([("empathy/anger", None)]) is None
    prompt = judge_prompt("empathy/anger", "My flight was cancelled again!")
    assert "My flight was cancelled again!" in prompt and "[[3]]" in prompt and "perfunctory" in prompt
    with pytest.raises(ValueError, match="Unknown VStyle ability 'singing/pop'"):
        judge_prompt("singing/pop", "Sing!")


def test_overall_scores_reproduce_the_papers_arithmetic():
    for name, expected in (("voicebench", 83.21), ("openaudiobench", 76.61), ("ultraeval_s2s", 59.56)):
        benchmark = get_benchmark(name)
        subsets = {subset.name: {"score": subset.paper} for subset in benchmark.subsets}
        assert overall_score(benchmark, subsets) == pytest.approx(expected, abs=0.006)
        subsets.popitem()
        assert overall_score(benchmark, subsets) is None  # a missing subset: no overall
    assert set(BENCHMARKS) == {
        "voicebench",
        "openaudiobench",
        "ultraeval_s2s",
        "speechfc",
        "mmau",
        "librispeech",
        "commonvoice",
        "vstyle",
        "custom",
    }


def test_fac_eval_score_rescores_saved_function_calls(tmp_path):
    from transformers_fac.evaluation import score_predictions

    replies = [
        _call({"base": 10, "height": 5}),
        _call({"base": 10, "height": 7}),
        "<tool_call>{not json}</tool_call>",
    ]
    lines = []
    for index, reply in enumerate(replies):
        record = speechfc_record(index, f"wav/{index}.wav")
        lines.append(
            {
                "benchmark": "speechfc",
                "subset": "bfcl_single",
                "id": record["dataset_key"],
                "text": "",
                "raw_text": reply,
                "audio": None,
                "error": None,
                "fields": record,
            }
        )
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))

    results = score_predictions("speechfc", predictions)

    summary = results["subsets"]["bfcl_single"]
    assert summary["score"] == pytest.approx(100 / 3) and summary["malformed"] == 1 and summary["items"] == 3
    assert summary["paper"] == 92.73
    rescored = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [record["scores"]["score"] for record in rescored] == [100.0, 0.0, 0.0]
    table = (tmp_path / "results.md").read_text()
    assert "| bfcl_single | accuracy % | 33.33 | 92.73 | -59.40 | 3 | malformed 1 |" in table


def test_answer_matching_reads_reference_lists_written_as_literals(tmp_path):
    """UltraEval-Audio's exist-match on saved text replies (no audio: scored on the reply text, and said so)."""
    from transformers_fac.evaluation import score_predictions

    replies = [
        ("It is Paris, I think.", "['paris', 'city of light']"),
        ("London.", "['paris']"),
        ("Four", '["4", "four"]'),
    ]
    lines = [
        {
            "benchmark": "ultraeval_s2s",
            "subset": "trivia_qa",
            "id": str(index),
            "text": text,
            "raw_text": text,
            "audio": None,
            "error": None,
            "fields": {"question": "?", "answer": answer},
        }
        for index, (text, answer) in enumerate(replies)
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))

    summary = score_predictions("ultraeval_s2s", predictions)["subsets"]["trivia_qa"]

    assert summary["score"] == pytest.approx(200 / 3) and summary["scored_on"] == "reply text (no ASR)"


def test_ifeval_without_nltk_data_is_a_clear_error(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # no punkt_tab anywhere
    fields = {
        "key": 2,
        "prompt": "Answer in fewer than 5 sentences.",
        "instruction_id_list": ["length_constraints:number_sentences"],
        "kwargs": [{"relation": "less than", "num_sentences": 5}],
    }
    with pytest.raises(RuntimeError, match=r"python -m nltk\.downloader punkt_tab"):
        scoring.ifeval_flags("One. Two. Three.", fields)


def test_sampled_judgements_are_combined_as_voicebench_does():
    from transformers_fac.evaluation.judging import combine

    assert RUBRICS["open_1_5"].samples == 3 and RUBRICS["yes_no"].majority
    assert combine([4.0, None, 5.0], majority=False) == 4.5
    assert combine([100.0, 0.0, 100.0], majority=True) == 100.0
    assert combine([0.0, None, 100.0, 0.0], majority=True) == 0.0
    assert combine([None, None], majority=False) is None
