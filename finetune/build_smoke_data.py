"""Build a small spoken-dialogue dataset from the repository's audio files, for the CPU smoke fine-tune and tests.

Each row has a question (`question`, an `Audio` column), a reply text (`answer`) and a spoken reply (`answer_audio`,
an `Audio` column). The audio comes from the three fixture recordings, augmented per row (speed, gain, crop) and
written as WAV files at 16, 22.05, 24 or 44.1 kHz (the data preparation resamples them to 16 kHz). With
`bad_rows=True` four unusable rows are appended (an empty file, a silent file, a missing file, an empty reply) to
exercise the "report and skip" path.

Usage:
    python finetune/build_smoke_data.py --output-dir /tmp/fac-smoke/data --rows 12
"""

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from transformers_fac.audio_io import SAMPLING_RATE, load_audio, resample

REPO = Path(__file__).resolve().parents[1]
AUDIO_DIR = REPO / "tests" / "fixtures" / "audio"
SOURCES = ("question_en.wav", "question_zh.wav", "real_zh_6s.wav")
REPLIES = (
    "The capital of France is Paris.",
    "It will be sunny tomorrow.",
    "I would love a cup of green tea.",
    "See you at the station at nine.",
)
FILE_RATES = (16000, 22050, 24000, 44100)


def augment(waveform: np.ndarray, rng: np.random.Generator, max_seconds: float) -> np.ndarray:
    """Speed ×0.9–1.1 (resampling), gain 0.4–1.0, and a random crop of 60–100 % of at most `max_seconds` (≥ 1 s)."""
    speed = rng.uniform(0.9, 1.1)
    waveform = resample(waveform, SAMPLING_RATE * speed, SAMPLING_RATE)
    longest = min(len(waveform), int(max_seconds * SAMPLING_RATE))
    length = max(min(SAMPLING_RATE, longest), int(longest * rng.uniform(0.6, 1.0)))
    start = int(rng.integers(0, len(waveform) - length + 1))
    waveform = waveform[start : start + length] * rng.uniform(0.4, 1.0)
    return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def _write(path: Path, waveform: np.ndarray, rate: int) -> str:
    sf.write(path, resample(waveform, SAMPLING_RATE, rate) if rate != SAMPLING_RATE else waveform, rate)
    return str(path)


def build_smoke_dataset(
    output_dir: str | Path,
    rows: int = 12,
    seed: int = 0,
    bad_rows: bool = False,
    max_question_seconds: float = 4.0,
    max_answer_seconds: float = 2.5,
):
    """Write the audio files under `output_dir/audio` and return the `datasets.Dataset` (without bad rows also
    saved to `output_dir/dataset` with `save_to_disk`, audio embedded)."""
    from datasets import Audio, Dataset

    output_dir = Path(output_dir)
    audio_dir = output_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [load_audio(AUDIO_DIR / name) for name in SOURCES]
    columns = {"question": [], "answer": [], "answer_audio": []}
    for row in range(rows):
        question = augment(sources[row % len(sources)], rng, max_question_seconds)
        answer = augment(sources[(row + 1) % len(sources)], rng, max_answer_seconds)
        rate = FILE_RATES[row % len(FILE_RATES)]
        columns["question"].append(_write(audio_dir / f"question_{row}.wav", question, rate))
        columns["answer"].append(REPLIES[row % len(REPLIES)])
        columns["answer_audio"].append(_write(audio_dir / f"answer_{row}.wav", answer, 24000))
    if bad_rows:
        good_answer = columns["answer_audio"][0]
        bad = [
            (_write(audio_dir / "empty.wav", np.zeros(0, np.float32), SAMPLING_RATE), REPLIES[0]),
            (_write(audio_dir / "silent.wav", np.zeros(SAMPLING_RATE, np.float32), SAMPLING_RATE), REPLIES[1]),
            (str(audio_dir / "missing.wav"), REPLIES[2]),
            (columns["question"][0], "   "),
        ]
        for question, answer in bad:
            columns["question"].append(question)
            columns["answer"].append(answer)
            columns["answer_audio"].append(good_answer)
    dataset = Dataset.from_dict(columns).cast_column("question", Audio()).cast_column("answer_audio", Audio())
    if not bad_rows:  # `save_to_disk` embeds the audio files, and one of the bad rows has none
        dataset.save_to_disk(str(output_dir / "dataset"))
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-rows", action="store_true", help="append 4 unusable rows")
    args = parser.parse_args()
    dataset = build_smoke_dataset(args.output_dir, args.rows, args.seed, args.bad_rows)
    where = "in memory only (bad rows)" if args.bad_rows else f"saved to {Path(args.output_dir) / 'dataset'}"
    print(f"{len(dataset)} rows {where}: {dataset.features}")


if __name__ == "__main__":
    main()
