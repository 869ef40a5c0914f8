"""`fac-chat`: talk to Fun-Audio-Chat from the command line.

fac-chat question.wav -o reply.wav                      # one spoken reply
fac-chat q1.wav q2.wav -o reply.wav                     # a multi-turn chat: reply_1.wav, reply_2.wav
fac-chat --interactive -o reply.wav                     # asks for one audio file per turn: reply_1.wav, ...
fac-chat question.wav --text-only                       # a written reply only
fac-chat question.wav -o reply.wav --model tiny         # the built-in tiny random checkpoint (CPU, no download)
fac-chat --live                                         # hands-free: microphone and speaker (see cli_live.py)
fac-chat question.wav -o reply.wav --voice me.wav       # reply in the voice of a clip (see cli_voice.py)
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from . import cli_live
from .cli_voice import add_voice_arguments, check_voice_arguments, speaker_from_args

DEFAULT_MODEL = "FunAudioLLM/Fun-Audio-Chat-8B"
OUTPUT_FILES = """\
output files:
  The reply text goes to stdout; progress and the path of every file written go to stderr.
  One question: the spoken reply is written to -o (default: reply.wav in the current folder).
  Several questions, or --interactive: turn N is written to <name>_N<suffix>, so -o r.wav writes
  r_1.wav, r_2.wav, ... (never r.wav itself). Existing files are overwritten. --text-only writes no file.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fac-chat",
        description="Ask Fun-Audio-Chat a spoken question; print its reply and write the spoken reply to a wav file.",
        epilog=OUTPUT_FILES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("audio", nargs="*", help="question audio file(s); several files are consecutive chat turns")
    parser.add_argument(
        "-o",
        "--output",
        default="reply.wav",
        help="the spoken reply's 24 kHz wav (default: %(default)s); several turns are numbered (below)",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or directory, or 'tiny' for the test model")
    parser.add_argument("--token2wav", default=None, help="Hub id or directory of the CosyVoice3 decoder")
    parser.add_argument("--speaker", default=None, help="voice: 中文女 (default) or 中文男")
    parser.add_argument("--text-only", action="store_true", help="reply in text only (no speech)")
    parser.add_argument("--system", default=None, help="system prompt (default: the official one of the mode)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"], help="default: bf16 on cuda")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="LLM steps (5 per second of speech)")
    parser.add_argument("--interactive", action="store_true", help="ask for an audio file at each turn")
    add_voice_arguments(parser)
    cli_live.add_arguments(parser)
    return parser


def load_model(args: argparse.Namespace):
    """The model (with its speech decoder unless `--text-only`) and processor that the options name."""
    import torch
    from transformers import AutoModelForMultimodalLM, AutoProcessor

    from .tiny import tiny_checkpoint

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_flush_denormal(True)  # float32 denormals make CPU matrix products up to ~60x slower
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    model_path = tiny_checkpoint() if args.model == "tiny" else args.model
    status(f"Loading {args.model} on {device} ({str(dtype).removeprefix('torch.')})...")
    processor = AutoProcessor.from_pretrained(model_path)
    token2wav = None if args.text_only else (args.token2wav or "auto")
    model = AutoModelForMultimodalLM.from_pretrained(
        model_path, dtype=dtype, device_map=device, token2wav=token2wav
    ).eval()
    if not args.text_only:
        status("Loading the speech decoder...")
        if model.token2wav is None:
            raise ValueError("this checkpoint names no speech decoder: pass --token2wav, or use --text-only")
    return model, processor


def reply_speaker(model, args: argparse.Namespace):
    """The voice of spoken replies (`--voice` or `--speaker`, checked now rather than after a reply); None in text."""
    if args.text_only:
        return None
    speaker = speaker_from_args(model.token2wav, args)
    model.token2wav.speaker_embedding(speaker)  # an unknown voice fails now, not after a reply
    return speaker


class ChatSession:
    """A loaded model, processor and conversation; one `reply(audio)` call per user turn."""

    def __init__(self, args: argparse.Namespace, model, processor):
        from .conversation import FunAudioChatConversation
        from .prompts import reply_system_prompt

        self.args, self.model, self.processor = args, model, processor
        self.mode = "text" if args.text_only else "audio"
        self.speaker = reply_speaker(model, args)
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
        vocoder = self.model.token2wav
        codes = output.valid_speech_codes(vocoder.config.vocab_size)[0]
        if codes.numel() == 0:
            return text.strip(), np.zeros(0, np.float32), vocoder.config.sampling_rate
        waveform = vocoder.decode(codes, speaker=self.speaker)[0].float().cpu().numpy()
        return text.strip(), waveform, vocoder.config.sampling_rate


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
            line = input("audio> ").strip()
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_voice_arguments(parser, args)
    cli_live.check_arguments(parser, args)
    if not args.audio and not args.interactive and not args.live:
        parser.error("give at least one audio file, or --interactive, or --live")
    if args.text_only and args.speaker:
        parser.error("--speaker chooses the voice of spoken replies; it cannot be used with --text-only")
    try:
        for audio in args.audio:  # seconds, before a model that may take minutes to load
            check_audio_file(audio)
        if args.live:
            cli_live.prepare(args, check_audio_file)
            model, processor = load_model(args)
            return cli_live.run(args, model, processor, reply_speaker(model, args))
        session = ChatSession(args, *load_model(args))
        numbered = len(args.audio) > 1 or args.interactive
        for turn, audio in enumerate(args.audio, start=1):
            write_reply(session, audio, output_path(args.output, turn, numbered))
        if args.interactive:
            interactive(session, args.output, turn=len(args.audio))
    except KeyboardInterrupt:  # the reply in progress was stopped and its thread joined on the way out
        status("fac-chat: interrupted")
        return 130
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        status(f"error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
