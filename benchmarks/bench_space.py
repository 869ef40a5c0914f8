"""Many users of the Space at once, as users are: each a `gradio_client` tab asking spoken questions turn after turn.

Starts `python spaces_demo/app.py --model tiny` from one or more checkouts (`--checkout DIR`, repeatable: e.g. this
one and a `git worktree` of an older commit, so that both are measured in one run on the same machine), then for
each load (`--load USERSxTURNS`, repeatable) runs that many users at once, each asking `--question` for the given
number of turns, and prints per checkout and load: the turn time (question sent -> turn over) p50 / p90 / max, the
time to the reply's first text p50 / p90, and the time a lone user's turn takes on the same app (`alone`).

    python benchmarks/bench_space.py --load 8x3 --load 16x2                                   # this checkout
    git worktree add /tmp/before cca9d18
    python benchmarks/bench_space.py --checkout /tmp/before --checkout . --load 8x3 --load 16x2  # before vs now

`--env KEY=VALUE` sets a variable for every app (an older checkout ignores those it does not know), e.g.
`--env FAC_DECODER_PROCESS=1` for the shared engine's decoder process.
"""

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the app launcher the Space tests use

from space_testing import app_process  # noqa: E402

QUESTION = ROOT / "examples" / "question_en.wav"
MODE = "Speech + text"
VOICE = "中文女"  # a stock voice every version of the app knows (an empty voice was refused by older ones)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_user(url: str, turns: int, question: Path, results: list[dict], start: threading.Barrier) -> None:
    """One tab: `turns` questions in a row; records each turn's times."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    start.wait()
    for _ in range(turns):
        sent, first_text = time.perf_counter(), None
        error = None
        try:
            for update in client.submit(handle_file(str(question)), MODE, VOICE, api_name="/respond"):
                history = update[0] or []
                replies = [m for m in history if isinstance(m, dict) and m.get("role") == "assistant"]
                if first_text is None and replies and str(replies[-1].get("content") or "").strip():
                    first_text = time.perf_counter() - sent
        except Exception as failure:  # noqa: BLE001 - counted and shown, the other users go on
            error = f"{type(failure).__name__}: {failure}"
        results.append({"turn_s": time.perf_counter() - sent, "first_text_s": first_text, "error": error})


def run_load(url: str, users: int, turns: int, question: Path) -> list[dict]:
    results: list[dict] = []
    start = threading.Barrier(users)
    threads = [threading.Thread(target=one_user, args=(url, turns, question, results, start)) for _ in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def summary(results: list[dict]) -> dict:
    turns = [r["turn_s"] for r in results if r["error"] is None]
    firsts = [r["first_text_s"] for r in results if r["error"] is None and r["first_text_s"] is not None]
    row = {"turns": len(results), "errors": sum(r["error"] is not None for r in results)}
    if turns:
        row.update(turn_p50=statistics.median(turns), turn_p90=percentile(turns, 0.9), turn_max=max(turns))
    if firsts:
        row.update(first_p50=statistics.median(firsts), first_p90=percentile(firsts, 0.9))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", action="append", type=Path, help="a checkout whose Space to run (default: .)")
    parser.add_argument("--load", action="append", help="USERSxTURNS, e.g. 8x3 (default: 8x3 and 16x2)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="longest reply in LLM steps (default: 40)")
    parser.add_argument("--question", type=Path, default=QUESTION)
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for every app, e.g. FAC_DECODER_PROCESS=1 (repeatable)"
    )
    args = parser.parse_args()
    checkouts = args.checkout or [ROOT]
    loads = [tuple(int(n) for n in load.lower().split("x")) for load in (args.load or ["8x3", "16x2"])]
    rows = []
    for checkout in checkouts:
        log = Path(f"/tmp/bench_space_{checkout.resolve().name}.log")
        env = {"PYTHONPATH": f"{checkout.resolve() / 'src'}:{checkout.resolve()}", "OMP_NUM_THREADS": "2"}
        env.update(item.split("=", 1) for item in args.env)
        flags = ("--max-new-tokens", str(args.max_new_tokens))
        with app_process(log, *flags, env=env, demo=checkout.resolve() / "spaces_demo") as (_, url):
            alone = summary(run_load(url, 1, 2, args.question))
            for users, turns in loads:
                row = summary(run_load(url, users, turns, args.question))
                rows.append((checkout, f"{users} users x {turns} turns", row, alone))
                print(checkout, users, turns, row, file=sys.stderr, flush=True)
    print("| checkout | load | turns (errors) | turn p50 / p90 / max s | first text p50 / p90 s | alone: turn p50 s |")
    print("|---|---|---|---|---|---|")
    for checkout, load, row, alone in rows:
        print(
            f"| {checkout} | {load} | {row['turns']} ({row['errors']}) | "
            f"{row.get('turn_p50', float('nan')):.1f} / {row.get('turn_p90', float('nan')):.1f} / "
            f"{row.get('turn_max', float('nan')):.1f} | {row.get('first_p50', float('nan')):.1f} / "
            f"{row.get('first_p90', float('nan')):.1f} | {alone.get('turn_p50', float('nan')):.1f} |"
        )


if __name__ == "__main__":
    main()
