"""VStyle (spoken instruction following): the judge's instruction, the parser of its score and the weighted overall,
after alibaba/vstyle `lalm_eval/gemini_eval.py` and `lalm_eval/eval_prompts/{en,zh}/*.txt`, in our own words.

The judge (an audio LLM; VStyle uses Gemini) hears the spoken reply and reads the instruction's transcript
(`instruct_text`) and its type (`ability`, `category/subcategory`). It rates 1-5 on one scale per category:
1 = the content does not do what was asked; 2 = right content, none of the requested style; 3 = the style only
partly or weakly; 4 = all of it, but the voice sounds synthetic; 5 = all of it in a natural, human-sounding voice
(empathy: 2 = perfunctory, 3 = brief or shallow comfort, 4 = real empathy with flaws in the delivery). It ends with
the score in double brackets; the last bracketed number is read (the whole answer when it is only a number).

The language's score is VStyle's weighted mean of the subcategory means: each of the four categories weighs a quarter,
shared equally by its subcategories, except that `acoustic_attributes/composite_properties` takes half of its
category's quarter; categories without items are left out and the weights renormalised.
"""

import re

CATEGORIES = {
    "acoustic_attributes": ("age", "speed", "gender", "emotion", "pitch", "volume", "composite_properties"),
    "instruction": ("emotion", "variation", "style"),
    "role_play": ("character", "scenario"),
    "empathy": ("anger", "sadness_disappointment", "anxiety_fear", "joy_excitement"),
}
"""VStyle's categories and their subcategories (`ability` is `category/subcategory`)."""

_ASKED = {
    "acoustic_attributes": "content spoken with given voice attributes (gender, age, pitch, speed, volume, emotion, "
    "or several at once)",
    "instruction": "content spoken in a style, emotion or change of style described in words",
    "role_play": "a reply in character, or fitting a scenario, in the voice that role or scenario calls for",
    "empathy": "a reply to a user who voices a feeling (anger, sadness, fear, joy), caring in content and tone",
}
_LEVELS = {
    "empathy": (
        "on topic but perfunctory or emotionally off, with almost no empathy",
        "some empathy or congratulation, but brief or shallow",
        "real empathy and support, with one or two flaws in how naturally or warmly it is spoken",
    ),
}
_DEFAULT_LEVELS = (
    "right content, but the delivery follows none of the requested style",
    "right content, but the style is met only in part or too weakly",
    "right content and style, but the voice sounds synthetic (artefacts, flat prosody)",
)

_TEMPLATE = """You judge a voice assistant by listening to its spoken reply (the audio attached). The user's spoken
instruction, transcribed below, asked for {asked}. Judge the reply's words and how they are spoken; consider only the
requirements the instruction states or clearly implies, and do not reward expressiveness for its own sake.
Score from 1 to 5:
1 = the content does not do what was asked (wrong, missing, incoherent, or in another language than the instruction);
2 = {two};
3 = {three};
4 = {four};
5 = everything asked for, in a clear, fluent voice that sounds like a real person.

Instruction type: {ability}
Instruction: {instruction}

Reason briefly, then end with the score in double brackets, for example "Final score: [[3]]"."""


def judge_prompt(ability: str, instruction: str) -> str:
    """The judging instruction for an item of type `ability` ("category/subcategory").

    Example:
        >>> "Instruction: Say hi sadly." in judge_prompt("instruction/emotion", "Say hi sadly.")
        True
    """
    category = ability.split("/", 1)[0]
    if category not in CATEGORIES:
        raise ValueError(f"Unknown VStyle ability {ability!r}; the categories are {', '.join(CATEGORIES)}.")
    two, three, four = _LEVELS.get(category, _DEFAULT_LEVELS)
    return _TEMPLATE.format(
        asked=_ASKED[category], two=two, three=three, four=four, ability=ability, instruction=instruction
    )


def parse_score(answer: str) -> float | None:
    """The judge's 1-5 score: the last `[[number]]`, else the whole answer when it is a number; None otherwise.

    Example:
        >>> parse_score("The pitch is low as asked. Final score: [[4]]"), parse_score("5"), parse_score("[[7]]")
        (4.0, 5.0, None)
    """
    values = re.findall(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", answer)
    text = values[-1] if values else answer.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 1 <= value <= 5 else None


def _weights() -> dict[str, float]:
    weights = {}
    for category, subcategories in CATEGORIES.items():
        if category == "acoustic_attributes":
            others = 0.125 / (len(subcategories) - 1)
            weights.update(
                {f"{category}/{sub}": 0.125 if sub == "composite_properties" else others for sub in subcategories}
            )
        else:
            weights.update({f"{category}/{sub}": 0.25 / len(subcategories) for sub in subcategories})
    return weights


WEIGHTS = _weights()
"""VStyle's weight of each ability in the overall score (they sum to 1)."""


def weighted_score(scores: list[tuple[str, float | None]]) -> float | None:
    """VStyle's overall from `(ability, score)` pairs: the weighted mean of the abilities' means (unscored items and
    unknown abilities left out), None when nothing is scored.

    Example:
        >>> round(weighted_score([("empathy/anger", 4.0), ("empathy/anger", 2.0), ("role_play/character", 5.0)]), 3)
        4.333
    """
    by_ability: dict[str, list[float]] = {}
    for ability, score in scores:
        if score is not None and ability in WEIGHTS:
            by_ability.setdefault(ability, []).append(score)
    used = sum(WEIGHTS[ability] for ability in by_ability)
    if not used:
        return None
    return sum(WEIGHTS[ability] * sum(values) / len(values) for ability, values in by_ability.items()) / used


__all__ = ["CATEGORIES", "WEIGHTS", "judge_prompt", "parse_score", "weighted_score"]
