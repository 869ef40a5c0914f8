"""`fac-chat`: talk to Fun-Audio-Chat from the command line.

fac-chat question.wav -o reply.wav                      # one spoken reply
fac-chat q1.wav q2.wav -o reply.wav                     # a multi-turn chat: reply_1.wav, reply_2.wav
fac-chat --interactive -o reply.wav                     # asks for one audio file per turn: reply_1.wav, ...
fac-chat question.wav --text-only                       # a written reply only
fac-chat question.wav -o reply.wav --model tiny         # the built-in tiny random checkpoint (CPU, no download)
fac-chat --live                                         # hands-free: microphone and loudspeaker (see cli_live.py)
fac-chat question.wav -o reply.wav --voice me.wav       # reply in the voice of a clip (see cli_voice.py)
"""

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from transformers_fac_cli.chat_arguments import parse_chat_arguments

from . import cli_live
from .cli_voice import check_voice_extra, voice_from_args

MODEL_HINT = (
    "Use --model tiny (the built-in test model, no download), a local checkpoint directory, or HF_HUB_OFFLINE=1 "
    "with the model already in the cache."
)


def load_model(args: argparse.Namespace):
    """The model (with its speech decoder unless `--text-only`) and processor that the options name."""
    import torch
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    from .hub_access import hub_loading_kwargs
    from .quantization import quantization_config
    from .tiny import tiny_checkpoint

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_flush_denormal(True)  # float32 denormals make CPU matrix products up to ~60x slower
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    quantization = quantization_config(args.quantize, device) if args.quantize else None
    model_path = tiny_checkpoint() if args.model == "tiny" else args.model
    hub = hub_loading_kwargs(model_path, "the model", MODEL_HINT)  # seconds, not minutes of retries, when offline
    backbone = f", {args.quantize} backbone" if args.quantize else ""
    status(f"Loading {args.model} on {device} ({str(dtype).removeprefix('torch.')}{backbone})...")
    processor = AutoProcessor.from_pretrained(model_path, **hub)
    token2wav = None if args.text_only else (args.token2wav or "auto")
    model = AutoModelForMultimodalLM.from_pretrained(
        model_path, dtype=dtype, device_map=device, token2wav=token2wav, quantization_config=quantization, **hub
    ).eval()
    if not args.text_only:
        status("Loading the speech decoder...")
        if model.token2wav is None:
            raise ValueError("this checkpoint names no speech decoder: pass --token2wav, or use --text-only")
    return model, processor


class ChatSession:
    """A loaded model, processor and conversation; one `reply(audio)` call per user turn."""

    def __init__(self, args: argparse.Namespace, model, processor):
        from .conversation import FunAudioChatConversation
        from .prompts import reply_system_prompt

        self.args, self.model, self.processor = args, model, processor
        self.mode = "text" if args.text_only else "audio"
        self.voice = voice_from_args(model.token2wav, args)  # None with --text-only (no --voice then)
        self.chat = FunAudioChatConversation(system_prompt=args.system or reply_system_prompt(self.mode))

    def reply(self, audio: str) -> tuple[str, np.ndarray | None, int | None]:
        from .audio_io import AudioInputError, is_silent, load_audio
        from .streaming import BackgroundGeneration, FunAudioChatIteratorStreamer

        if not Path(audio).is_file():
            raise FileNotFoundError(f"no such audio file: {audio}")
        waveform = load_audio(audio, name=audio)
        if is_silent(waveform):
            raise AudioInputError(f"{audio}: the recording is silent")
        self.chat.add_user_audio(waveform)
        try:
            inputs = self.chat.model_inputs(self.processor).to(self.model.device)
        except Exception:
            self.chat.turns.pop()
            raise
        inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
        streamer = FunAudioChatIteratorStreamer(self.processor.tokenizer)
        kwargs = dict(generation_mode=self.mode, return_dict_in_generate=True)
        if self.mode == "audio":  # decoded below, once the reply is complete (a stopped reply is not decoded)
            kwargs["return_audio"] = False
        if self.args.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.args.max_new_tokens
        try:  # the reply text streams to stdout as it is written (printed once); Ctrl-C stops at the next step
            with BackgroundGeneration(self.model, streamer, **inputs, **kwargs) as generation:
                for chunk in streamer:
                    if chunk.text and chunk.text[0]:
                        print(chunk.text[0], end="", flush=True)
                output = generation.result()
        except BaseException:
            self.chat.turns.pop()
            raise
        finally:
            print(flush=True)
        text = self.processor.decode(output.sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        self.chat.add_assistant_reply(text)
        if self.mode == "text":
            return text.strip(), None, None
        token2wav = self.model.token2wav
        codes = output.valid_speech_codes(token2wav.config.vocab_size)[0]
        if codes.numel() == 0:
            return text.strip(), np.zeros(0, np.float32), token2wav.config.sampling_rate
        waveform = token2wav.decode(codes, voice=self.voice)[0].float().cpu().numpy()
        return text.strip(), waveform, token2wav.config.sampling_rate


def check_audio_file(path: str, question: bool = True) -> None:
    """Fails early (before the model loads) on a file that is missing, empty, not audio, or (a question) silent or
    longer than the model hears."""
    from .audio_io import SAMPLING_RATE, AudioInputError, is_silent, load_audio
    from .processing_fun_audio_chat import DEFAULT_MAX_AUDIO_SECONDS

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    if file.stat().st_size == 0:
        raise AudioInputError(f"{path} is empty (0 bytes)")
    waveform = load_audio(path, name=path, validate=False)
    if waveform.size == 0:
        raise AudioInputError(f"{path} holds no audio (0 samples)")
    if not question:
        return
    seconds = waveform.size / SAMPLING_RATE
    if seconds > DEFAULT_MAX_AUDIO_SECONDS:
        raise AudioInputError(
            f"{path} is {seconds:.1f} s long, but the model hears at most {DEFAULT_MAX_AUDIO_SECONDS:g} s per "
            "question: cut it into shorter questions (several files are consecutive turns)"
        )
    if is_silent(waveform):
        raise AudioInputError(f"{path}: the recording is silent")


def status(message: str) -> None:
    """Progress messages go to stderr, so that stdout holds only the reply text (streamed as it is written)."""
    print(message, file=sys.stderr, flush=True)


def output_path(base: str, turn: int, numbered: bool) -> Path:
    """The reply file of turn `turn`: `base` itself, or `<stem>_<turn><suffix>` when turns are numbered."""
    path = Path(base)
    return path.with_name(f"{path.stem}_{turn}{path.suffix or '.wav'}") if numbered else path


def write_reply(session: ChatSession, audio: str, path: Path) -> None:
    _, waveform, rate = session.reply(audio)
    if waveform is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, waveform, rate)
        status(f"Wrote {path} ({len(waveform) / rate:.1f} s)")


def interactive(session: ChatSession, base: str, turn: int = 0) -> None:
    """Asks for one audio file per turn; the replies are numbered on from `turn` + 1."""
    status("Interactive chat: enter the path of an audio file per turn; /reset starts over, empty line quits.")
    while True:
        try:
            print("audio> ", end="", file=sys.stderr, flush=True)  # the prompt too: stdout holds only replies
            line = input().strip()
        except EOFError:
            break
        if not line:
            break
        if line == "/reset":
            session.chat.reset()
            status("New conversation.")
            continue
        turn += 1
        try:
            write_reply(session, line, output_path(base, turn, numbered=True))
        except (OSError, ValueError) as error:
            turn -= 1
            status(f"error: {error}")


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the command stops (a `KeyboardInterrupt`, so every cleanup path treats it alike)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the command runs, SIGINT (Ctrl-C) and SIGTERM raise [`Stopped`] in the main thread; the signals that
    follow are ignored, so that stopping (cancelling the reply and joining its worker at the next decoding step) is
    never cut short and no worker is left running into interpreter shutdown. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # once stopping, later signals stay ignored until the exit
            signal.signal(signum, signal.SIG_IGN if stopping else handler)


def main(argv: list[str] | None = None) -> int:
    """`fac-chat` (also `python -m transformers_fac.cli`): parses and checks the arguments, then runs the command."""
    return run_parsed(parse_chat_arguments(argv))


def run_parsed(args: argparse.Namespace) -> int:
    """Runs `fac-chat` with checked arguments under [`stop_on_signals`]; returns the exit status."""
    with stop_on_signals():
        return run(args)


def run(args: argparse.Namespace) -> int:
    """Runs the command whose arguments were checked; returns the exit status (130 after Ctrl-C, 143 after SIGTERM)."""
    try:
        for audio in args.audio:  # seconds, before a model that may take minutes to load
            check_audio_file(audio)
        if args.voice is not None:
            check_voice_extra(args.voice)
        if args.live:
            cli_live.prepare(args, check_audio_file)
            model, processor = load_model(args)
            return cli_live.run(args, model, processor, voice_from_args(model.token2wav, args))
        session = ChatSession(args, *load_model(args))
        numbered = len(args.audio) > 1 or args.interactive
        for turn, audio in enumerate(args.audio, start=1):
            write_reply(session, audio, output_path(args.output, turn, numbered))
        if args.interactive:
            interactive(session, args.output, turn=len(args.audio))
    except KeyboardInterrupt as error:  # the reply in progress was stopped and its thread joined on the way out
        if getattr(error, "signum", signal.SIGINT) == signal.SIGTERM:
            status("fac-chat: terminated")
            return 128 + signal.SIGTERM
        status("fac-chat: interrupted")
        return 128 + signal.SIGINT
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        status(f"error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
