"""What a Fun-Audio-Chat server runs and the limits it enforces (`fac-serve` flags map onto these fields)."""

from dataclasses import dataclass, field, fields

from ..quantization import QUANTIZATIONS

REAL_MODEL = "FunAudioLLM/Fun-Audio-Chat-8B"
SERVED_MODEL_NAME = "fun-audio-chat"
CHARS_PER_TOKEN = 16  # more characters than any token of the model's tokenizer holds in real text


@dataclass
class ServerSettings:
    """Settings of a server: the model, batching, limits and access.

    Args:
        model: Hub id or directory, or `"tiny"` for the built-in tiny random checkpoint (CPU, no download).
        token2wav: the speech decoder: `"auto"` (the one the checkpoint names), a directory or a Hub id.
        device: `"cuda"`, `"cpu"`, ...; default cuda when available.
        dtype: `"bfloat16"` or `"float32"`; default bf16 on cuda.
        quantize: quantize the LLM backbone's weights when loading: `"int8"`, `"fp8"` (torchao), `"nf4"`
            (bitsandbytes) or `"int4"` (torchao, CUDA only); see `transformers_fac.quantization`.
        threads: torch's CPU threads (default on CPU: half the cores, as generation and speech decoding run side by side;
            more threads than cores make both many times slower).
        served_model_name: the model id clients send (`model=`); the `model` value is accepted too.
        api_key: when set, every `/v1` request needs `Authorization: Bearer <api_key>`.
        voice_dirs: saved voices to offer besides the decoder's stock voices (voice directories or files, or folders
            of them; cloned with `fac-chat --save-voice` or `FunAudioChatVoice.save`).
        max_batch_size: replies decoded together (the engine's rows; a new request joins at the next step).
        max_prefill_tokens: prompt tokens prefilled per decoding step at most (the running replies wait for no more).
        max_queue: requests waiting for a batch; more are refused with 429 and `Retry-After`.
        max_body_mb: the largest request body (MiB), 413 above.
        max_audio_seconds: the longest input audio per request (all its audio parts together).
        max_new_tokens: the longest reply in LLM steps (5 per second of speech): the default and the limit of
            `max_completion_tokens`.
        max_prompt_tokens: the longest prompt in tokens (at most what the model's positions leave for the reply).
        max_text_chars: the most characters of text per request or realtime session (messages, instructions, tool
            definitions), refused before anything is tokenized; default 16 per allowed prompt token (no text packs
            more characters into a token), so that a megabyte of text costs a length check, not a tokenizer run.
        drain_seconds: on SIGTERM, how long in-flight requests may take to finish before the server exits; those
            still running then are answered with a 503 (an `error` event on a stream).
        realtime_idle_seconds: a realtime session with no client event and no reply in progress for this long is
            closed (an `error` event `session_expired`, then close code 1000).
        header_timeout_seconds / body_timeout_seconds: a client must send its request headers (and then its body)
            within this time, else it gets a 408 and its connection is closed (slow clients cannot hold connections).
        compile: decode with static caches and the compiled step (`cache_implementation="static"`, CUDA graphs on a
            GPU): the reply engine runs `max_batch_size` fixed slots of 2048 positions (prompt plus reply) through
            one compiled graph, whichever requests join or leave; it compiles before the server is ready.
        decoder_process: on a CPU, decode the replies' audio after their first chunk in a child process, so that
            speech decoding and generation do not take turns on the interpreter's lock (faster first audio and
            replies under load; the server starts a few seconds later). See `ReplyEngine`.
    """

    model: str = "tiny"
    token2wav: str = "auto"
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    threads: int | None = None
    served_model_name: str = SERVED_MODEL_NAME
    api_key: str | None = None
    voice_dirs: list[str] = field(default_factory=list)
    max_batch_size: int = 8
    max_prefill_tokens: int = 4096
    max_queue: int = 64
    max_body_mb: float = 32.0
    max_audio_seconds: float = 120.0
    max_new_tokens: int | None = None
    max_prompt_tokens: int | None = 8192
    max_text_chars: int | None = None
    drain_seconds: float = 30.0
    realtime_idle_seconds: float = 600.0
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 60.0
    compile: bool = False
    decoder_process: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "max_queue", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.drain_seconds < 0:
            raise ValueError(f"drain_seconds must be >= 0, got {self.drain_seconds}.")
        for name in ("max_body_mb", "max_audio_seconds", "realtime_idle_seconds", "header_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.body_timeout_seconds <= 0:
            raise ValueError(f"body_timeout_seconds must be positive, got {self.body_timeout_seconds}.")
        for name in ("max_new_tokens", "max_prompt_tokens", "threads", "max_text_chars"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {self.quantize!r}.")
        if self.max_new_tokens is None:  # the tiny model speaks gibberish: keep its replies short on CPU
            self.max_new_tokens = 60 if self.model == "tiny" else 600
        if self.max_text_chars is None:
            self.max_text_chars = CHARS_PER_TOKEN * (self.max_prompt_tokens or 8192)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def model_ids(self) -> list[str]:
        """The `model` values that requests may name."""
        return list(dict.fromkeys([self.served_model_name, self.model]))

    @classmethod
    def from_dict(cls, values: dict) -> "ServerSettings":
        """Settings from a mapping (a config file); unknown keys are an error that lists the known ones."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown server setting(s) {unknown}; known: {sorted(known)}.")
        return cls(**values)


# The settings that `fac-serve` takes as flags (and Ray's `serve run` as key=value strings): type and help.
SETTING_FLAGS = {
    "model": (str, "Hub id or directory, or 'tiny' (default) for the tiny random checkpoint"),
    "token2wav": (str, "the speech decoder: 'auto' (the checkpoint's), a directory or a Hub id"),
    "device": (str, "cuda, cpu, ... (default: cuda when available)"),
    "dtype": (str, "bfloat16 or float32 (default: bf16 on cuda)"),
    "quantize": (str, "quantize the LLM backbone: int8, fp8 (torchao), nf4 (bitsandbytes), int4 (torchao, CUDA)"),
    "threads": (int, "torch CPU threads (default on CPU: half the cores)"),
    "served_model_name": (str, "the model id clients send (default: fun-audio-chat)"),
    "voice_dirs": (str, "a saved (cloned) voice, or a folder of them, to offer; repeat for more"),
    "max_batch_size": (int, "replies decoded together; a new request joins at the next step (default: 8)"),
    "max_prefill_tokens": (int, "prompt tokens prefilled per decoding step at most (default: 4096)"),
    "max_queue": (int, "waiting requests before answering 429 (default: 64)"),
    "max_body_mb": (float, "largest request body in MiB (default: 32)"),
    "max_audio_seconds": (float, "longest input audio per request (default: 120)"),
    "max_new_tokens": (int, "longest reply in LLM steps, 5 per second of speech (default: 600; tiny: 60)"),
    "max_prompt_tokens": (int, "longest prompt in tokens (default: 8192)"),
    "max_text_chars": (int, "most characters of text per request or realtime session (default: 16 per prompt token)"),
    "drain_seconds": (float, "on SIGTERM, how long in-flight requests may take to finish (default: 30)"),
    "realtime_idle_seconds": (float, "close a realtime session idle for this long (default: 600)"),
    "header_timeout_seconds": (float, "a client must send its request headers within this time (default: 10)"),
    "body_timeout_seconds": (float, "a client must send its request body within this time (default: 60)"),
    "compile": (bool, "static caches and the compiled decoding step (CUDA graphs on a GPU); warms up at start"),
    "decoder_process": (bool, "on a CPU, decode speech after each first chunk in a child process (faster under load)"),
}


def settings_from_strings(values: dict[str, str]) -> ServerSettings:
    """Settings from `key=value` strings (Ray's `serve run ... key=value`; `voice_dirs` comma-separated), converted
    to the fields' types."""
    kinds = {name: _yes if kind is bool else kind for name, (kind, _) in SETTING_FLAGS.items()}
    kinds["voice_dirs"] = lambda value: [part for part in value.split(",") if part]
    return ServerSettings.from_dict({key: kinds.get(key, str)(value) for key, value in values.items()})


def _yes(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


__all__ = ["REAL_MODEL", "SERVED_MODEL_NAME", "SETTING_FLAGS", "ServerSettings", "settings_from_strings"]
