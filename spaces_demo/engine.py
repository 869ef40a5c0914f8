"""The model side of the demo: settings from environment variables, loading once at start-up, and the replies.

`Engine.speak` and `Engine.write` are the only code that runs the model. `app.py` wraps them in `@spaces.GPU` (a
no-op outside ZeroGPU), so they take and return only picklable values: ZeroGPU runs them in a forked worker process.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from session_files import DEFAULT_ROOT

import transformers_fac  # noqa: F401  (registers the Auto classes)
from transformers_fac.engine import (
    AudioDelta,
    ReplyDone,
    ReplyEngine,
    ReplyFailed,
    ReplyRequest,
    TextDelta,
    merge_deltas,
)
from transformers_fac.engine.reply_stream import stream_reply

REAL_MODEL = "FunAudioLLM/Fun-Audio-Chat-8B"
DEFAULT_VOICE = "中文女"


def _env_int(environ, name: str, default: int | None) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}.") from None


def _env_flag(environ, name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes")


@dataclass
class Settings:
    """What the app runs; every field has an environment variable (in brackets) and a command-line flag.

    Args:
        model: Hub id or directory, or `"tiny"` for the built-in tiny random checkpoint (CPU, no download) [FAC_MODEL].
        token2wav: the speech decoder: `"auto"` (the one the checkpoint names), a directory or a Hub id [FAC_TOKEN2WAV].
        device: `"cuda"` or `"cpu"`; default cuda when available (or on ZeroGPU) [FAC_DEVICE].
        dtype: `"bfloat16"` or `"float32"`; default bf16 on cuda [FAC_DTYPE].
        quantize: quantize the LLM backbone's weights: `"int8"`, `"fp8"`, `"nf4"` or `"int4"` (CUDA); default none
            [FAC_QUANTIZE].
        max_new_tokens: the longest reply in LLM steps (5 per second of speech) [FAC_MAX_NEW_TOKENS].
        max_seconds: the longest question accepted, in seconds (the model itself takes up to 300 s) [FAC_MAX_SECONDS].
        batch_size: users' replies decoded together by the shared reply engine, a new turn joining the running
            batch at the next decoding step (1: each reply on an engine of its own; always 1 on ZeroGPU, where each
            reply runs in a GPU worker of its own) [FAC_BATCH_SIZE].
        concurrency: replies in progress at the same time, over all users (default: `batch_size`) [FAC_CONCURRENCY].
        compile: the shared engine decodes fixed slots on static caches through one compiled step (CUDA graphs on a
            GPU; `fac-serve --compile`'s engine), compiled at start-up; on ZeroGPU or with a batch size of 1 the
            replies decode eagerly [FAC_COMPILE=1].
        decoder_process: on a CPU, the shared engine decodes the replies' audio after their first chunk in a child
            process, so that speech decoding and generation do not take turns on Python's interpreter lock (faster
            turns under load; starts a few seconds later) [FAC_DECODER_PROCESS=1].
        gpu_duration: seconds of GPU one reply may take on ZeroGPU [FAC_GPU_DURATION].
        files_dir: where the chats' audio files are kept, one folder per browser session, deleted when the session
            ends [FAC_FILES_DIR].
        audio_turns: the turns of a chat whose audio is kept (older turns keep their text only) [FAC_AUDIO_TURNS].
        cache_ttl: Gradio's own temporary files (uploads, copies of the chat audio it serves, stream playlists) are
            deleted once unused for this many seconds, checked every 5 minutes at most [FAC_CACHE_TTL].
    """

    model: str = REAL_MODEL
    token2wav: str = "auto"
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    max_new_tokens: int = 600
    max_seconds: int = 60
    batch_size: int = 8
    concurrency: int = 8
    compile: bool = False
    decoder_process: bool = False
    gpu_duration: int = 120
    files_dir: str = str(DEFAULT_ROOT)
    audio_turns: int = 8
    cache_ttl: int = 3600

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        environ = os.environ if environ is None else environ
        model = environ.get("FAC_MODEL", "").strip() or REAL_MODEL
        batch_size = 1 if environ.get("SPACES_ZERO_GPU") else _env_int(environ, "FAC_BATCH_SIZE", 8)
        return cls(
            model=model,
            token2wav=environ.get("FAC_TOKEN2WAV", "").strip() or "auto",
            device=environ.get("FAC_DEVICE", "").strip() or None,
            dtype=environ.get("FAC_DTYPE", "").strip() or None,
            quantize=environ.get("FAC_QUANTIZE", "").strip() or None,
            # the tiny model speaks gibberish: keep its replies short on CPU
            max_new_tokens=_env_int(environ, "FAC_MAX_NEW_TOKENS", 40 if model == "tiny" else 600),
            max_seconds=_env_int(environ, "FAC_MAX_SECONDS", 60),
            batch_size=batch_size,
            concurrency=_env_int(environ, "FAC_CONCURRENCY", batch_size),
            compile=_env_flag(environ, "FAC_COMPILE"),
            decoder_process=_env_flag(environ, "FAC_DECODER_PROCESS"),
            gpu_duration=_env_int(environ, "FAC_GPU_DURATION", 120),
            files_dir=environ.get("FAC_FILES_DIR", "").strip() or str(DEFAULT_ROOT),
            audio_turns=_env_int(environ, "FAC_AUDIO_TURNS", 8),
            cache_ttl=_env_int(environ, "FAC_CACHE_TTL", 3600),
        )

    def __post_init__(self):
        for name in ("audio_turns", "cache_ttl", "batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")

    @property
    def delete_cache(self) -> tuple[int, int]:
        """Gradio's `delete_cache`: (how often to look, in seconds; the age at which a temporary file goes)."""
        return min(self.cache_ttl, 300), self.cache_ttl


@dataclass
class Engine:
    """The loaded model and processor, the voices of its speech decoder, and the settings."""

    model: object
    processor: object
    settings: Settings
    voices: list[str] = field(default_factory=list)
    replies: ReplyEngine | None = None  # the shared engine (None: each reply on a private one, as on ZeroGPU)

    @classmethod
    def load(cls, settings: Settings) -> "Engine":
        """Loads the model, its processor and its speech decoder (with the voices) once, at start-up."""
        import torch
        from transformers import AutoModelForMultimodalLM, AutoProcessor

        from transformers_fac.quantization import quantization_config
        from transformers_fac.tiny import tiny_checkpoint

        on_gpu = torch.cuda.is_available() or bool(os.environ.get("SPACES_ZERO_GPU"))
        device = settings.device or ("cuda" if on_gpu else "cpu")
        dtype = getattr(torch, settings.dtype) if settings.dtype else (torch.bfloat16 if device == "cuda" else None)
        quantization = quantization_config(settings.quantize, device) if settings.quantize else None
        path = tiny_checkpoint() if settings.model == "tiny" else settings.model
        if device == "cpu":
            torch.set_flush_denormal(True)  # float32 denormals make CPU matrix products up to ~60x slower
        print(f"Loading {settings.model} on {device}...", flush=True)
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForMultimodalLM.from_pretrained(
            path,
            dtype=dtype or torch.float32,
            device_map=device,
            token2wav=settings.token2wav,
            quantization_config=quantization,
        ).eval()
        if model.token2wav is None:  # loads the decoder now rather than at the first reply
            raise ValueError(f"{settings.model} names no speech decoder: set FAC_TOKEN2WAV to a decoder.")
        voices = model.token2wav.voice_names  # loads the voices now
        print(f"Ready: voices {', '.join(voices)}.", flush=True)
        replies = None
        if settings.batch_size > 1:
            static = {"cache_implementation": "static"} if settings.compile else {}
            replies = ReplyEngine(
                model,
                processor,
                max_batch_size=settings.batch_size,
                decoder_process=settings.decoder_process,
                **static,
            ).start()
            if replies.compiled:
                print("Compiling the decoding step...", flush=True)
                replies.warm_up()
        return cls(model=model, processor=processor, settings=settings, voices=voices, replies=replies)

    def close(self) -> None:
        """Stops the shared engine's thread (after the replies in progress, at most 30 s)."""
        if self.replies is not None:
            self.replies.close(30.0)

    @property
    def default_voice(self) -> str:
        if self.model.token2wav.default_voice is not None:  # saved with the checkpoint or adapter: listed first
            return self.voices[0]
        return DEFAULT_VOICE if DEFAULT_VOICE in self.voices else self.voices[0]

    def speak(self, inputs, spoken: bool, voice: str | None) -> Iterator[TextDelta | AudioDelta]:
        """Streams a reply to processor outputs (CPU tensors): text and, if `spoken`, 24 kHz audio events.

        Closing the generator stops generating at the next decoding step (the stop button and barge-in close it),
        which frees the reply's row in the shared engine.
        """
        if self.replies is None:
            with stream_reply(
                self.model,
                self.processor,
                inputs,
                voice=voice if spoken else None,
                generation_mode="audio" if spoken else "text",
                max_new_tokens=self.settings.max_new_tokens,
            ) as stream:
                yield from stream
            return
        request = ReplyRequest(
            inputs=inputs,
            spoken=spoken,
            voice=voice if spoken else None,
            max_new_tokens=self.settings.max_new_tokens,
        )
        reply = self.replies.submit(request)
        try:
            while True:
                # what piled up while the page was updated goes out as one text and one audio update
                for event in merge_deltas([reply.next_blocking(), *reply.ready_events()]):
                    if isinstance(event, ReplyFailed):
                        raise RuntimeError(event.message)
                    if isinstance(event, ReplyDone):
                        return
                    yield event
        finally:
            reply.cancel()  # a stopped reply frees its row (no effect once it is done)

    def write(self, inputs) -> str:
        """A whole text reply (function calling); tool-call tags are kept, end-of-turn tokens removed."""
        request = ReplyRequest(inputs=inputs, spoken=False, max_new_tokens=self.settings.max_new_tokens)
        if self.replies is None:
            tokens = self.settings.max_new_tokens
            with stream_reply(
                self.model, self.processor, inputs, generation_mode="text", max_new_tokens=tokens
            ) as stream:
                for _ in stream:
                    pass
            done = stream.done
        else:
            *_, done = self.replies.submit(request)
            if isinstance(done, ReplyFailed):
                raise RuntimeError(done.message)
        return done.raw_text.strip()
