"""`fac-chat` stopped by signals mid-reply, 100 times: Ctrl-C, SIGTERM, two SIGINTs in a row, SIGINT then SIGTERM.

Every run must end with the expected status and one line, and never abort the interpreter (exit 134: a generation
worker left running into interpreter shutdown). To make 100 real exits affordable, two fork servers (side by
side) import the package and load the tiny checkpoint once each (`fac-chat`'s own `load_model`, one torch thread so
that forking is safe), then fork one child per run; each child runs `fac-chat`'s `main` on that loaded model (the
exit path under test starts at the reply) and leaves through the normal interpreter shutdown, atexit hooks included.
"""

import json
import os
import subprocess
import sys
import textwrap

from conftest import AUDIO_FILES

RUNS = int(os.environ.get("FAC_SIGNAL_RUNS", "100"))  # fewer only while developing
SCENARIOS = {  # signals sent once the reply text starts streaming, and the status the command must end with
    "sigint": (["SIGINT"], 130),
    "sigterm": (["SIGTERM"], 143),
    "double_sigint": (["SIGINT", "SIGINT"], 130),
    "sigint_then_sigterm": (["SIGINT", "SIGTERM"], 130),
}

FORK_SERVER = textwrap.dedent(
    """
    import json, os, random, select, signal, sys, time
    import torch
    torch.set_num_threads(1)  # no OpenMP worker threads in the server: forking is safe
    from transformers_fac import cli
    from transformers_fac_cli.chat_arguments import parse_chat_arguments

    model, audio, out_dir, runs, scenarios = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
    first = int(sys.argv[6])  # this server's runs are first, first + 1, ...
    names = sorted(scenarios)
    random.seed(first)
    loaded = cli.load_model(parse_chat_arguments([audio, "--model", model]))
    results = []
    for run in range(first, first + runs):
        name = names[run % len(names)]
        read_end, write_end = os.pipe()
        err_path = os.path.join(out_dir, f"stderr_{run}.txt")
        pid = os.fork()
        if pid == 0:  # the child: fac-chat itself, stdout into the pipe, leaving through the interpreter's exit
            os.close(read_end)
            os.dup2(write_end, 1)
            err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(err, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            argv = [audio, "--model", model, "-o", os.path.join(out_dir, f"r_{run}.wav"), "--max-new-tokens", "400"]
            cli.load_model = lambda args: loaded
            sys.exit(cli.main(argv))
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 120)
        started = bool(ready) and bool(os.read(read_end, 1))
        if started:
            time.sleep(random.uniform(0.0, 0.3))  # somewhere inside a decoding step, or between two
            for index, signame in enumerate(scenarios[name][0]):
                if index:
                    time.sleep(random.uniform(0.0, 0.02))  # "two signals in a row", as `timeout -s INT` or a user
                os.kill(pid, getattr(signal, signame))
        else:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(read_end)
        code = os.waitstatus_to_exitcode(status)
        results.append({"scenario": name, "started": started, "code": code, "stderr": open(err_path).read()})
    print(json.dumps(results))
    """
)


def test_signals_mid_reply_never_abort_the_interpreter(tiny_e2e_dir, tmp_path):
    scenarios = json.dumps({name: [signals, code] for name, (signals, code) in SCENARIOS.items()})
    servers = []  # two fork servers side by side (one torch thread each): half the wall time on two cores
    for first, count in ((0, RUNS // 2), (RUNS // 2, RUNS - RUNS // 2)):
        argv = [str(tiny_e2e_dir), str(AUDIO_FILES["en"]), str(tmp_path), str(count), scenarios, str(first)]
        servers.append(
            subprocess.Popen(
                [sys.executable, "-c", FORK_SERVER, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    runs = []
    for server in servers:
        stdout, stderr = server.communicate(timeout=1500)
        assert server.returncode == 0, stderr[-3000:]
        runs += json.loads(stdout.strip().splitlines()[-1])
    assert len(runs) == RUNS and all(run["started"] for run in runs), runs
    aborted = [run for run in runs if run["code"] in (134, -6)]
    assert not aborted, aborted[:3]
    unexpected = [run for run in runs if run["code"] != SCENARIOS[run["scenario"]][1]]
    assert not unexpected, unexpected[:3]
    assert {run["scenario"] for run in runs} == set(SCENARIOS)
    for run in runs:
        lines = run["stderr"].rstrip().splitlines()
        assert "Traceback" not in run["stderr"], run["stderr"]
        last = "fac-chat: terminated" if SCENARIOS[run["scenario"]][1] == 143 else "fac-chat: interrupted"
        assert lines[-1] == last, run["stderr"]
    assert not list(tmp_path.glob("r_*.wav"))  # a stopped reply writes no file
