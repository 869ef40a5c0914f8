"""LLM-judged scoring through any OpenAI-compatible endpoint (`--judge-base-url`, `--judge-model`; the key from
`FAC_EVAL_JUDGE_API_KEY` or `OPENAI_API_KEY`).

Each judged subset has a rubric with the benchmark's scale and answer format (VoiceBench `api_judge.py`;
OpenAudioBench's prompts as Kimi-Audio-Evalkit runs them; UltraEval-Audio's `chatbot-eval`), written here in our own
words, and a parser that turns the judge's answer into a score on the paper's scale. A judgement the parser cannot
read is counted as unparseable and left out of the mean; it never stops the run. `Judge.ask` can also send a spoken
reply as an `input_audio` part, for VStyle's judge, which must hear it (rubric and parser in `vstyle.py`). VoiceBench samples its judge three
times (temperature 0.5) and combines the answers; the other benchmarks ask once, greedy.
"""

import base64
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JUDGE_KEY_VARIABLES = ("FAC_EVAL_JUDGE_API_KEY", "OPENAI_API_KEY")

_OPEN_1_TO_5 = """You are rating a voice assistant. It heard the user's spoken request (transcribed below as
[Request]) and answered (its answer is [Answer]). Give a score from 1 to 5:
1 = off-topic, wrong or does not address the request;
2 = somewhat relevant, but inaccurate or incomplete;
3 = relevant and mostly accurate, but wordy or padded with details that do not help;
4 = relevant, accurate and concise;
5 = exactly what was needed: relevant, accurate, direct and efficient.

[Request]: {question}
[Answer]: {reply}

Answer with the score only (one digit), nothing else."""

_YES_NO = """[Question]
{question}

[Reference answer]
{reference}

[Candidate answer]
{reply}

Given the question and the reference answer, is the candidate answer correct? Answer with a single word: Yes or No."""

_CHAT_1_TO_10 = """Act as a fair judge of an AI assistant's answer to the user's question below. Weigh helpfulness,
relevance, accuracy, depth, creativity and detail. Explain your view briefly and objectively, then give a rating from
1 to 10 written exactly as "[[rating]]", for example "Rating: [[6]]".

[Question]
{question}

[The Start of Assistant's Answer]
{reply}
[The End of Assistant's Answer]"""

_CORRECT_INCORRECT = """You check answers to factual questions against a standard answer. The wording may differ
(numbers as digits or words, names in any language, punctuation ignored); what matters is whether the core meaning
is right. Give a short reason, then end with "the score is [Correct]" or "the score is [Incorrect]".

## Question
{question}
## Standard answer
{reference}
## Model's answer
{reply}"""

_MATH_1_TO_5 = """You grade a student's answer to a reasoning problem against the reference answer, ignoring
formatting (LaTeX or plain, 1/3 or 0.33, pi or 3.14 are all the same):
5 = correct answer with a correct and complete derivation;
4 = correct answer without a derivation;
3 = wrong answer with a mostly correct derivation, or a correct answer with a clearly wrong derivation;
2 = wrong answer with a mostly wrong derivation;
1 = wrong answer and wrong approach.
Give your reason, then the score in square brackets, for example "the score is [4]".

## Problem
{question}
## Reference answer
{reference}
## Student's answer
{reply}"""

_JSON_JUDGMENT = """You will see a question, its reference answers and an answer to judge. The answer is correct
when it expresses or contains the meaning of at least one reference answer; tone and format do not matter. Reply in
JSON with a one-sentence "analysis" and a "judgment" that is "correct" or "incorrect", for example
{{"analysis": "...", "judgment": "correct"}}.
# Question
{question}
# Reference answers
{reference}
# Answer to judge
{reply}"""


def _first_digit(low: int, high: int, scale: float = 1.0) -> Callable[[str], float | None]:
    def parse(text: str) -> float | None:
        match = re.search(r"\b(\d+(?:\.\d+)?)\b", text)
        value = float(match.group(1)) if match else None
        return value * scale if value is not None and low <= value <= high else None

    return parse


def _double_brackets(scale: float) -> Callable[[str], float | None]:
    def parse(text: str) -> float | None:
        match = re.search(r"\[\[(\d+(?:\.\d+)?)\]\]", text)
        value = float(match.group(1)) if match else None
        return value * scale if value is not None and 1 <= value <= 10 else None

    return parse


def _last_bracket_digit(text: str) -> float | None:
    found = re.findall(r"\[([1-5])\]", text)
    return 20.0 * int(found[-1]) if found else None


def _yes_no(text: str) -> float | None:
    words = re.findall(r"[a-z]+", text.lower())
    if not words or words[0] not in ("yes", "no"):
        return None
    return 100.0 if words[0] == "yes" else 0.0


def _correct_incorrect(text: str) -> float | None:
    match = re.search(r"score is \[(correct|incorrect)\]", text, flags=re.IGNORECASE)
    return None if match is None else (100.0 if match.group(1).lower() == "correct" else 0.0)


def _json_judgment(text: str) -> float | None:
    match = re.search(r"\{.*?\}", text, flags=re.DOTALL)
    try:
        judgment = str(json.loads(match.group(0))["judgment"]).strip().lower() if match else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return {"correct": 100.0, "incorrect": 0.0}.get(judgment)


@dataclass(frozen=True)
class Rubric:
    """A judge prompt (placeholders `{question}`, `{reference}`, `{reply}`), its parser to the paper's scale, and
    how the benchmark samples its judge: `samples` judgements at `temperature` (VoiceBench asks for 3 at 0.5 and
    averages them, a majority vote for yes / no; the others ask once, greedy)."""

    template: str
    parse: Callable[[str], float | None]
    scale: str
    samples: int = 1
    temperature: float = 0.0
    majority: bool = False


RUBRICS: dict[str, Rubric] = {
    "open_1_5": Rubric(_OPEN_1_TO_5, _first_digit(1, 5), "1-5", samples=3, temperature=0.5),
    "yes_no": Rubric(_YES_NO, _yes_no, "accuracy %", samples=3, temperature=0.5, majority=True),
    "chat_1_10": Rubric(_CHAT_1_TO_10, _double_brackets(10.0), "rating x10"),
    "correct_incorrect": Rubric(_CORRECT_INCORRECT, _correct_incorrect, "accuracy %"),
    "math_1_5": Rubric(_MATH_1_TO_5, _last_bracket_digit, "score x20"),
    "json_judgment": Rubric(_JSON_JUDGMENT, _json_judgment, "accuracy %"),
}
"""The judged rubrics by name (the benchmark table says which subset uses which)."""


def combine(values: list[float | None], majority: bool) -> float | None:
    """One score from a rubric's sampled judgements: the mean of the readable ones, or for yes / no rubrics the
    majority (100 when "yes" outnumbers "no"); None when none is readable.

    Example:
        >>> combine([4.0, None, 5.0], majority=False), combine([100.0, 0.0, 100.0], majority=True)
        (4.5, 100.0)
    """
    readable = [value for value in values if value is not None]
    if not readable:
        return None
    if majority:
        return 100.0 if sum(value > 50 for value in readable) > len(readable) / 2 else 0.0
    return sum(readable) / len(readable)


class Judge:
    """An OpenAI-compatible chat endpoint used as a judge, sampled as each rubric says.

    Example:
        >>> judge = Judge("http://localhost:8000/v1", "gpt-4o-mini")  # doctest: +SKIP
        >>> judge.score("open_1_5", question="Tell me a joke.", reply="Why did ...")  # doctest: +SKIP
        (4.0, '4 | 4 | 4')
    """

    def __init__(self, base_url: str | None, model: str, api_key: str | None = None, max_tokens: int = 512):
        from ..optional_imports import import_extra

        openai = import_extra("openai", "eval", "LLM-judged scoring")
        key = api_key or next((os.environ[name] for name in JUDGE_KEY_VARIABLES if os.environ.get(name)), None)
        self.client = openai.OpenAI(base_url=base_url, api_key=key or "none", max_retries=2)
        self.model = model
        self.max_tokens = max_tokens

    def ask(self, prompt: str, temperature: float = 0.0, audio_wav: bytes | None = None) -> str:
        """The judge's answer to `prompt`; `audio_wav` (a WAV file's bytes) is sent with it as an `input_audio`
        part, for judges that must hear a spoken reply."""
        options = {"top_p": 0.95} if temperature > 0 else {}
        content: Any = prompt
        if audio_wav is not None:
            clip = {"data": base64.b64encode(audio_wav).decode("ascii"), "format": "wav"}
            content = [{"type": "text", "text": prompt}, {"type": "input_audio", "input_audio": clip}]
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": content}],
            temperature=temperature,
            max_tokens=self.max_tokens,
            **options,
        )
        return response.choices[0].message.content or ""

    def score(self, rubric: str, question: str, reply: str, reference: Any = "") -> tuple[float | None, str]:
        """(score on the paper's scale, or None when no judgement is readable; the judge's answers, joined)."""
        chosen = RUBRICS[rubric]
        reference = reference if isinstance(reference, str) else json.dumps(reference, ensure_ascii=False)
        prompt = chosen.template.format(question=question, reference=reference, reply=reply)
        answers = [self.ask(prompt, chosen.temperature) for _ in range(chosen.samples)]
        return combine([chosen.parse(answer) for answer in answers], chosen.majority), " | ".join(answers)


__all__ = ["JUDGE_KEY_VARIABLES", "RUBRICS", "Judge", "Rubric", "combine"]
