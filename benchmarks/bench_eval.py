"""Speed of `fac-eval run`: items per minute when the replies are generated one at a time and in batches.

How to run (prints a markdown table; no assertions):

    python benchmarks/bench_eval.py                                  # tiny checkpoint, CPU, text and spoken replies
    python benchmarks/bench_eval.py --preset mid --items 16           # bench_server's mid-size random model (CPU)
    python benchmarks/bench_eval.py --model FunAudioLLM/Fun-Audio-Chat-8B --device cuda --items 64 --batch-sizes 1 16

The inputs are VoiceBench-sized: `--items` spoken questions (the 5-6 s fixture recordings, alternately English and
Chinese) in VoiceBench's `commoneval` schema for text replies (`--benchmark voicebench --subset commoneval`; left
unscored: no judge) and as a `custom` folder for spoken replies (scored with DNSMOS, which is not timed). Every reply
is `--tokens` LLM steps at most (greedy). The table gives the generation time only (`results.json`'s
`generation_seconds`, the model's loading left out), items per minute and the speed-up over batch size 1, all from
one run of this script.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
AUDIO = REPO / "tests" / "fixtures" / "audio"


def question_files(folder: Path, items: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = [AUDIO / "question_en.wav", AUDIO / "question_zh.wav"]
    paths = []
    for index in range(items):
        path = folder / f"q{index}.wav"
        shutil.copy(sources[index % 2], path)
        paths.append(path)
    return paths


def commoneval_copy(folder: Path, items: int) -> Path:
    """A local copy in hlt-lab/voicebench `commoneval`'s schema: audio (16 kHz), prompt."""
    import datasets

    clips = question_files(folder / "clips", items)
    table = {"audio": [str(path) for path in clips], "prompt": [f"question {i}" for i in range(items)]}
    dataset = datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(sampling_rate=16000))
    dataset.save_to_disk(str(folder / "data"))
    return folder / "data"


def custom_copy(folder: Path, items: int) -> Path:
    clips = question_files(folder / "clips", items)
    lines = [json.dumps({"id": f"q{i}", "audio": f"clips/{path.name}"}) for i, path in enumerate(clips)]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=["tiny", "mid"], default="tiny")
    parser.add_argument("--model", help="a checkpoint instead of a preset (e.g. the real model on a GPU)")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=24, help="longest reply (LLM steps)")
    parser.add_argument("--modes", nargs="+", choices=["text", "spoken"], default=["text", "spoken"])
    parser.add_argument("--device")
    args = parser.parse_args(argv)

    from transformers_fac.evaluation import run_evaluation

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = args.model
        if model is None and args.preset == "mid":
            from bench_server import mid_checkpoint

            model = str(mid_checkpoint(scratch / "mid", "small"))
        model = model or "tiny"
        sources = {"text": commoneval_copy(scratch / "text", args.items)}
        sources["spoken"] = custom_copy(scratch / "spoken", args.items)
        for mode in args.modes:
            benchmark, subset = ("voicebench", "commoneval") if mode == "text" else ("custom", None)
            for batch_size in args.batch_sizes:
                results = run_evaluation(
                    model,
                    benchmark,
                    scratch / f"out-{mode}-{batch_size}",
                    subset=subset,
                    data_dir=str(sources[mode]),
                    batch_size=batch_size,
                    max_new_tokens=args.tokens,
                    temperature=0,
                    device=args.device,
                    utmos=False,
                )
                rows.append((mode, batch_size, results["generated"], results["generation_seconds"]))
    print(
        f"\n`fac-eval run`, {args.model or args.preset}, {args.items} questions, replies of at most {args.tokens} steps\n"
    )
    print("| replies | batch size | items | generation s | items / min | speed-up vs batch 1 |")
    print("|---|---|---|---|---|---|")
    for mode, batch_size, items, seconds in rows:
        base = next(s for m, b, _, s in rows if m == mode and b == min(args.batch_sizes))
        per_minute = 60 * items / seconds if seconds else float("nan")
        print(f"| {mode} | {batch_size} | {items} | {seconds:.1f} | {per_minute:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
