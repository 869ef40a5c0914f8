"""The benchmarks `fac-eval` runs: where their data lives, their columns, prompts, scoring and the paper's numbers.

Every source below was read in the benchmark's own harness (not guessed); the comment at each entry names it.
Reported numbers are the Fun-Audio-Chat-8B technical report's (Tables 2-7). Speech-to-text subsets use the official
S2T system prompt, speech-to-speech ones the S2M prompt, function calling the official function-calling prompt with the
item's tools (`transformers_fac.prompts`).
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Subset:
    """One scored part of a benchmark.

    Args:
        name: the subset's name on the command line (`--subset`).
        paper: the report's number for Fun-Audio-Chat-8B (None when not reported).
        metric: what the score is ("accuracy %", "GPT score 1-5", "WER %", ...).
        scorer: the scoring rule: "judge", "audio_judge" (a judge that hears the spoken reply), "choice", "mmau",
            "match", "ifeval", "refusal", "function_calls" (BFCL's rules), "acebench_calls" (ACEBench's), "asr",
            "reference".
        rubric: the judge rubric (`judging.RUBRICS`) of judged subsets.
        source: where the data is: a Hub dataset id (or a file layout, see `benchmark_data`).
        config / split: the Hub configuration and split (split None: every split, concatenated).
        question / reference: the columns holding the question's transcript (what a judge reads) and the answer(s).
        id_column: the column naming each item (None: its row number).
        language: the reply language ("en", "zh"), for transcripts and error rates.
        options: details of the loader or scorer (e.g. OpenAudioBench's CSV columns, SpeechFC's category).
    """

    name: str
    paper: float | None
    metric: str
    scorer: str
    rubric: str | None = None
    source: str | None = None
    config: str | None = None
    split: str | None = "test"
    question: str | None = None
    reference: str | None = None
    id_column: str | None = None
    language: str = "en"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: its subsets, how its items are read (`layout`), the reply mode and the overall score."""

    name: str
    title: str
    layout: str  # "hub" (a datasets dataset), "openaudiobench", "speechfc", "mmau", "vstyle", "custom"
    mode: str  # "s2t", "s2m" (spoken replies) or "fc" (function calling)
    subsets: tuple[Subset, ...]
    overall_paper: float | None = None
    overall: str | None = "mean"  # "mean" of the subset scores, "voicebench" (1-5 scores x20 first) or None
    speech_metrics: bool = False  # UTMOS and ASR-WER of the spoken replies (UltraEval-Audio S2S)
    spoken_persona: bool = False  # the report's SPOKEN_S2M_PROMPT (S2M mode with the persona) as system prompt

    def subset(self, name: str) -> Subset:
        for subset in self.subsets:
            if subset.name == name:
                return subset
        raise ValueError(
            f"{self.name} has no subset {name!r}; choose one of: {', '.join(s.name for s in self.subsets)}."
        )


_VB = "hlt-lab/voicebench"
# VoiceBench (MatthewCYM/VoiceBench main.py, README; Kimi-Audio-Evalkit data/download_benchmark.py, which the report's
# README names for VoiceBench): load_dataset("hlt-lab/voicebench", subset, split), columns `audio` (cast to 16 kHz)
# and `prompt` (the transcript); `reference` for sd-qa / mmsu / openbookqa; `key`, `instruction_id_list`, `kwargs` for
# ifeval. Kimi-Audio-Evalkit evaluates `alpacaeval_full` (the leaderboard's AlpacaEval), sd-qa's `usa` split and every
# split of the others. Scoring: src/evaluator/{open,qa,mcq,ifeval,harm}.py and api_judge.py (gpt-4o-mini judge).
VOICEBENCH = Benchmark(
    name="voicebench",
    title="VoiceBench (speech to text)",
    layout="hub",
    mode="s2t",
    overall_paper=83.21,
    overall="voicebench",
    subsets=(
        Subset("alpacaeval", 4.80, "GPT score 1-5", "judge", "open_1_5", _VB, "alpacaeval_full", "test", "prompt"),
        Subset("commoneval", 4.42, "GPT score 1-5", "judge", "open_1_5", _VB, "commoneval", "test", "prompt"),
        Subset("sd-qa", 66.27, "accuracy %", "judge", "yes_no", _VB, "sd-qa", "usa", "prompt", "reference"),
        Subset("mmsu", 71.08, "accuracy %", "choice", None, _VB, "mmsu", None, "prompt", "reference"),
        Subset("openbookqa", 83.52, "accuracy %", "choice", None, _VB, "openbookqa", "test", "prompt", "reference"),
        Subset("ifeval", 78.52, "accuracy %", "ifeval", None, _VB, "ifeval", "test", "prompt", id_column="key"),
        Subset("advbench", 98.65, "refusal rate %", "refusal", None, _VB, "advbench", "test", "prompt"),
    ),
)

# OpenAudioBench (hub dataset baichuan-inc/OpenAudioBench, read as Kimi-Audio-Evalkit's OpenAudioBenchDownloader
# reads it): eval_datas/<subset>/<subset>.csv with the audio file names in `audio_filename` and the clips under
# eval_datas/<subset>/audios/; question / answer columns per subset below. Judged with the prompts of Kimi-Audio-Evalkit
# almeval/datasets/ds_refqa.py (OpenAudioBench_PROMPTS): alpaca_eval rated 1-10 (x10), reasoning_qa graded 1-5 (x20),
# the others correct / incorrect.
_OAB = "baichuan-inc/OpenAudioBench"
OPENAUDIOBENCH = Benchmark(
    name="openaudiobench",
    title="OpenAudioBench (speech to text)",
    layout="openaudiobench",
    mode="s2t",
    overall_paper=76.61,
    subsets=(
        Subset("alpaca_eval", 88.94, "GPT score x10", "judge", "chat_1_10", _OAB, None, None, "instruction", "output"),
        Subset(
            "llama_questions",
            83.33,
            "accuracy %",
            "judge",
            "correct_incorrect",
            _OAB,
            None,
            None,
            "Questions",
            "Answer",
        ),
        Subset("reasoning_qa", 69.80, "GPT score x20", "judge", "math_1_5", _OAB, None, None, "Prompt", "参考答案"),
        Subset(
            "trivia_qa",
            68.10,
            "accuracy %",
            "judge",
            "json_judgment",
            _OAB,
            None,
            None,
            "question",
            "answer_normalized_aliases",
        ),
        Subset(
            "web_questions", 72.90, "accuracy %", "judge", "json_judgment", _OAB, None, None, "question", "answers"
        ),
    ),
)

# UltraEval-Audio speech-to-speech (OpenBMB/UltraEval-Audio registry/dataset/{alpaca_eval,llama_questions,triviaqa,
# webQ}.yaml, registry/eval_task/{aqa,alpaca}.yaml): hub datasets TwinkStart/*, split `test`, audio column `audio`;
# the spoken reply is transcribed with Whisper-large-v3 (registry/model/whisper.yaml) and scored by `qa-exist-match`
# (a reference appears in the transcript) or, for AlpacaEval, the `chatbot-eval` judge (1-10, on the `instruction`
# column). Speech quality: UTMOS (registry/evaluator/utmos.yaml) and ASR-WER against the reply's own text (report).
ULTRAEVAL_S2S = Benchmark(
    name="ultraeval_s2s",
    title="UltraEval-Audio (speech to speech)",
    layout="hub",
    mode="s2m",
    overall_paper=59.56,
    speech_metrics=True,
    subsets=(
        Subset(
            "alpaca_eval",
            61.87,
            "GPT score x10",
            "judge",
            "chat_1_10",
            "TwinkStart/speech-chatbot-alpaca-eval",
            question="instruction",
            reference="output",
        ),
        Subset(
            "llama_questions", 78.33, "accuracy %", "match", None, "TwinkStart/llama-questions", reference="Answer"
        ),
        Subset("trivia_qa", 49.51, "accuracy %", "match", None, "TwinkStart/speech-triavia-qa", reference="answer"),
        Subset(
            "web_questions", 48.52, "accuracy %", "match", None, "TwinkStart/speech-web-questions", reference="answers"
        ),
    ),
)
SPEECH_QUALITY_PAPER = {"utmos": 4.37, "asr_wer": 4.32}
"""The report's speech quality on UltraEval-Audio Llama Questions: UTMOS, and ASR-WER (%) against the reply text."""

# SpeechFCEval (hub dataset FunAudioLLM/SpeechFCEval; records as in the official repository's
# evaluate/SpeechFCEval/result/*/predict-*.json): `utterance`, `file_name` (the clip, relative to the dataset root),
# `function` (JSON tools), `ground_truth` (JSON accepted calls), `category`, `dataset_key`, `index`. Scoring:
# compute_metrics_speech_fc.py -> utils/compute_metrics_bfcl.py ("multiple" = one call, "parallel" = any order) for
# BFCL and SmartInteract; utils/compute_metrics_acebench.py for the ACEBench subsets (category names as the BFCL ones:
# the dataset names SpeechFC-ACEBench-Single / -Parallel with underscores; `ground_truth` a JSON list of candidate
# answers `{name: {parameter: value}}`, parallel calls of one function as `name_1`, `name_2`).


def _speechfc_subset(name: str, paper: float, scorer: str, category: str, **options: Any) -> Subset:
    """A SpeechFCEval subset: the records of one `category`, named by `dataset_key`, accuracy of the calls."""
    return Subset(
        name,
        paper,
        "accuracy %",
        scorer,
        source="FunAudioLLM/SpeechFCEval",
        split=None,
        id_column="dataset_key",
        options={"category": category, **options},
    )


SPEECHFC = Benchmark(
    name="speechfc",
    title="SpeechFCEval (speech function calling)",
    layout="speechfc",
    mode="fc",
    overall=None,
    subsets=(
        _speechfc_subset("bfcl_single", 92.73, "function_calls", "SpeechFC_BFCL_Single", parallel=False),
        _speechfc_subset("bfcl_parallel", 87.63, "function_calls", "SpeechFC_BFCL_Parallel", parallel=True),
        _speechfc_subset("smartinteract", 79.79, "function_calls", "SpeechFC_SmartInteract", parallel=False),
        _speechfc_subset("acebench_single", 66.30, "acebench_calls", "SpeechFC_ACEBench_Single"),
        _speechfc_subset("acebench_parallel", 54.50, "acebench_calls", "SpeechFC_ACEBench_Parallel"),
    ),
)

# MMAU test-mini (Sakshi113/MMAU `mmau-test-mini.json`, read as Kimi-Audio-Evalkit's MMAUTestMiniDownloader reads it):
# a JSON list with `id`, `audio_id` (the clip, relative to the JSON's folder), `question`, `choices`, `answer` (the
# right choice's text), `task` (sound / music / speech), `dataset`, `category`, `difficulty`. Not on the Hub: give
# --data-dir. Instruction: the report's multiple-choice format (`scoring.mmau_instruction`).
MMAU = Benchmark(
    name="mmau",
    title="MMAU test-mini (audio understanding)",
    layout="mmau",
    mode="s2t",
    overall=None,
    subsets=(
        Subset(
            "test-mini",
            76.6,
            "accuracy %",
            "mmau",
            split=None,
            question="question",
            reference="answer",
            id_column="id",
            options={"file": "mmau-test-mini.json"},
        ),
    ),
)

# ASR (UltraEval-Audio registry/dataset/librispeech.yaml and CommonVoice.yaml): TwinkStart/librispeech splits
# test_clean / test_other, reference column `text`; TwinkStart/CommonVoice_15 splits en / zh, column `sentence`.
# Instruction: the report's "Please help me transcribe the audio."; WER (CER for Chinese) after Whisper's normalisers.
LIBRISPEECH = Benchmark(
    name="librispeech",
    title="LibriSpeech (ASR, WER %)",
    layout="hub",
    mode="s2t",
    overall=None,
    subsets=(
        Subset(
            "test_clean", 1.71, "WER %", "asr", source="TwinkStart/librispeech", split="test_clean", reference="text"
        ),
        Subset(
            "test_other", 4.13, "WER %", "asr", source="TwinkStart/librispeech", split="test_other", reference="text"
        ),
    ),
)
COMMONVOICE = Benchmark(
    name="commonvoice",
    title="Common Voice 15 (ASR, WER % / CER %)",
    layout="hub",
    mode="s2t",
    overall=None,
    subsets=(
        Subset("en", 8.88, "WER %", "asr", source="TwinkStart/CommonVoice_15", split="en", reference="sentence"),
        Subset(
            "zh",
            6.16,
            "CER %",
            "asr",
            source="TwinkStart/CommonVoice_15",
            split="zh",
            reference="sentence",
            language="zh",
        ),
    ),
)

# VStyle (alibaba/vstyle; data: hub dataset zhanjun/VStyle, which the repository's README links): one folder per
# language, `en/` and `zh/`, each a sound folder of `metadata.jsonl` and `wav/` (the Hub lists it as "soundfolder":
# the clip's path relative to the folder is in `file_name`, as that format requires). The other columns are those
# lalm_eval/README.md documents for its metadata: `id`, `instruct_id`, `ability` ("category/subcategory") and
# `instruct_text` (the spoken instruction's transcript). Replies are spoken with the report's SPOKEN_S2M_PROMPT and
# judged by an audio LLM that hears them (lalm_eval/gemini_eval.py with eval_prompts/<language>/<category>.txt; our
# wording in `vstyle.py`), 1-5, the language's score a weighted mean over the abilities.
VSTYLE = Benchmark(
    name="vstyle",
    title="VStyle (spoken instruction following, audio-judged 1-5)",
    layout="vstyle",
    mode="s2m",
    overall=None,
    spoken_persona=True,
    subsets=tuple(
        Subset(
            language,
            paper,
            "judge score 1-5",
            "audio_judge",
            source="zhanjun/VStyle",
            split=None,
            question="instruct_text",
            id_column="id",
            language=language,
            options={"folder": language},
        )
        for language, paper in (("en", 3.35), ("zh", 3.46))
    ),
)

# Users' own data: a `save_to_disk` folder or `data.jsonl` (`id`, `audio` relative to the folder, optional
# `reference`); spoken replies scored with DNSMOS, and with reference matching where references exist.
CUSTOM = Benchmark(
    name="custom",
    title="Custom data",
    layout="custom",
    mode="s2m",
    overall=None,
    subsets=(
        Subset("custom", None, "reference match %", "reference", split=None, reference="reference", id_column="id"),
    ),
)

BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        VOICEBENCH,
        OPENAUDIOBENCH,
        ULTRAEVAL_S2S,
        SPEECHFC,
        MMAU,
        LIBRISPEECH,
        COMMONVOICE,
        VSTYLE,
        CUSTOM,
    )
}
"""Every supported benchmark by name."""


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`, or a `ValueError` listing the supported ones.

    Example:
        >>> get_benchmark("voicebench").subset("sd-qa").split
        'usa'
    """
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}.")
    return BENCHMARKS[name]


__all__ = ["BENCHMARKS", "Benchmark", "SPEECH_QUALITY_PAPER", "Subset", "get_benchmark"]
