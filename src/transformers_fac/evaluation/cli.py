"""`fac-eval`: measure a model on the paper's benchmarks (or your own data) and compare with the paper.

fac-eval run --model M --benchmark B [--subset S] [--limit N] [--data-dir DIR] [--adapter A] [--voice V]
             [--batch-size K] [--quantize int8|int4|nf4|fp8] --output OUT
fac-eval score --benchmark B --predictions OUT/predictions.jsonl [--judge-model ...]
fac-eval list
"""

import argparse
import logging
import sys

from ..quantization import QUANTIZATIONS


def _judge_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scoring")
    group.add_argument(
        "--judge-model",
        help="judge model name for LLM-judged subsets (e.g. gpt-4o-mini; VStyle needs one that hears audio)",
    )
    group.add_argument(
        "--judge-base-url",
        help="OpenAI-compatible endpoint of the judge (default: the openai client's); "
        "key from FAC_EVAL_JUDGE_API_KEY or OPENAI_API_KEY",
    )
    group.add_argument(
        "--asr-model", help="ASR model transcribing spoken replies (default openai/whisper-large-v3; a local folder)"
    )
    group.add_argument("--no-utmos", action="store_true", help="do not try UTMOS (its weights come from torch.hub)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fac-eval", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="generate replies, score them, write predictions and results")
    run.add_argument("--model", default="FunAudioLLM/Fun-Audio-Chat-8B", help='checkpoint or "tiny"')
    run.add_argument("--benchmark", required=True, help="see `fac-eval list`")
    run.add_argument("--subset", help="one subset (default: all)")
    run.add_argument("--limit", type=int, help="the first N items of each subset")
    run.add_argument("--data-dir", help="a local copy of the data in the benchmark's schema (works offline)")
    run.add_argument("--adapter", help="a LoRA adapter folder, merged into the model")
    run.add_argument("--voice", help="voice of spoken replies: a stock name or a saved voice")
    run.add_argument("--batch-size", type=int, default=8, help="replies generated together (default 8)")
    run.add_argument("--max-new-tokens", type=int, default=512, help="longest reply in LLM steps (default 512)")
    run.add_argument("--temperature", type=float, help="0 = greedy (default: the checkpoint's sampling)")
    run.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    run.add_argument("--dtype", help="bfloat16, float32, ... (default: bfloat16 on CUDA, float32 on CPU)")
    run.add_argument(
        "--quantize", choices=QUANTIZATIONS, help="load the LLM backbone quantized: int8, fp8, nf4, int4 (CUDA)"
    )
    run.add_argument("--output", required=True, help="folder of predictions.jsonl, results.json, results.md")
    _judge_options(run)

    score = commands.add_parser("score", help="score saved predictions again")
    score.add_argument("--benchmark", required=True)
    score.add_argument("--predictions", required=True, help="a predictions.jsonl written by `fac-eval run`")
    score.add_argument("--output", help="folder of the results files (default: the predictions' folder)")
    score.add_argument("--device", help="where the ASR model runs")
    _judge_options(score)

    commands.add_parser("list", help="the benchmarks, their subsets and the paper's numbers")
    return parser


def _judge(args: argparse.Namespace):
    if not args.judge_model:
        return None
    from .judging import Judge

    return Judge(args.judge_base_url, args.judge_model)


def _list() -> None:
    from .benchmarks import BENCHMARKS

    for benchmark in BENCHMARKS.values():
        print(f"{benchmark.name}: {benchmark.title}")
        for subset in benchmark.subsets:
            paper = "n/a" if subset.paper is None else subset.paper
            print(f"  {subset.name:<16} {subset.metric:<18} paper {paper}  ({subset.source or 'local data'})")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "list":
        _list()
        return
    from .runner import run_evaluation, score_predictions

    try:
        if args.command == "run":
            results = run_evaluation(
                args.model,
                args.benchmark,
                args.output,
                subset=args.subset,
                limit=args.limit,
                data_dir=args.data_dir,
                adapter=args.adapter,
                voice=args.voice,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                device=args.device,
                dtype=args.dtype,
                quantize=args.quantize,
                judge=_judge(args),
                asr_model=args.asr_model,
                utmos=not args.no_utmos,
            )
        else:
            results = score_predictions(
                args.benchmark,
                args.predictions,
                args.output,
                judge=_judge(args),
                asr_model=args.asr_model,
                utmos=not args.no_utmos,
                device=args.device,
            )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"fac-eval: {error}")
    except KeyboardInterrupt:
        sys.exit("fac-eval: interrupted; run the same command again to resume.")
    from .report import results_markdown

    print(results_markdown(results))


if __name__ == "__main__":
    main()
