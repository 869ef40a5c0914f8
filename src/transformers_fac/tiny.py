"""A tiny random end-to-end Fun-Audio-Chat checkpoint, in the real Hub layouts, for tests, the CLI and the demo.

    python -m transformers_fac.tiny OUT_DIR        # or: python hub_configs/make_tiny.py OUT_DIR

writes, deterministically (same bytes for the same seed):

- the model (`config.json`, `model.safetensors`, `generation_config.json`) with the official key layout,
- a byte-level text tokenizer with the Qwen/Fun-Audio-Chat special tokens and the official chat template,
- `speech_tokenizer/` (`[AU0000]`…`[AU6560]` + 4 specials), `preprocessor_config.json`, `processor_config.json`,
- `token2wav/`: a tiny random CosyVoice3 decoder in the release layout (`cosyvoice3.yaml`, `flow.pt`, `hift.pt`) and
  a `spk2info.pt` with two random voices named like the stock ones, so audio output needs no download;
- `token2wav/campplus.onnx` and `token2wav/speech_tokenizer_v3.safetensors`: small stand-ins of the speaker-vector
  model and the speech tokenizer, so voice cloning (`fac-chat --model tiny --voice clip.wav`) works offline. They are
  written when their builders' packages are installed (`onnx` from the `voice` extra, `s3tokenizer`), and added to the
  cached checkpoint later once they are.

Random weights speak gibberish: this checks plumbing and shapes, not quality.
"""

import argparse
import logging
import os
import shutil
from pathlib import Path

import torch
from huggingface_hub import constants
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, WhisperFeatureExtractor

from .configuration_fun_audio_chat import FunAudioChatConfig
from .modeling_fun_audio_chat import FunAudioChatForConditionalGeneration
from .processing_fun_audio_chat import FunAudioChatProcessor
from .voice.frontend import CAMPPLUS_FILE
from .voice.stand_ins import write_voice_stand_ins

logger = logging.getLogger(__name__)

TEXT_SPECIALS = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|audio_pad|>",
    "<|sil|>",
    "<tool_call>",
    "</tool_call>",
]
SPEECH_CODES = 6561
SPEECH_SPECIALS = ["<|audio_bos|>", "<|audio_eos|>", "<|audio_pad|>", "<|endoftext|>"]
TINY_VERSION = 3  # bump when the built bytes change (the cached copy is then rebuilt)


def _text_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens, then the special tokens (ids 256...)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tokenizer.add_special_tokens({"additional_special_tokens": TEXT_SPECIALS})
    return tokenizer


def _speech_tokenizer() -> PreTrainedTokenizerFast:
    """`[AUnnnn]` has id nnnn, then the 4 speech specials (6561...)."""
    vocab = {f"[AU{code:04d}]": code for code in range(SPEECH_CODES)}
    for offset, token in enumerate(SPEECH_SPECIALS):
        vocab[token] = SPEECH_CODES + offset
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\[AU\d{4}\]|<\|[a-z_]+\|>"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|audio_bos|>",
        eos_token="<|audio_eos|>",
        pad_token="<|audio_pad|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.init_kwargs["audio_group_size"] = 5
    return tokenizer


def _config(tokenizer: PreTrainedTokenizerFast) -> FunAudioChatConfig:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in TEXT_SPECIALS}
    text = {
        "model_type": "qwen3",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "rope_theta": 5000000.0,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "audio_bos_index": ids["<|audio_bos|>"],
        "audio_eos_index": ids["<|audio_eos|>"],
        "sil_index": ids["<|sil|>"],
    }
    head = {
        "model_type": "qwen3",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "vocab_size": 64,
        "tie_word_embeddings": True,
    }
    audio = {
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "output_dim": 64,
        "crq_transformer_config": head,
    }
    return FunAudioChatConfig(
        audio_config=audio, text_config=text, audio_token_index=ids["<|AUDIO|>"], token2wav_source="token2wav"
    )


def _voices(path: Path, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed + 1)
    voices = {name: {"embedding": torch.randn(1, 192, generator=generator)} for name in ("中文女", "中文男")}
    torch.save(voices, path)


def build_tiny_checkpoint(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Writes the tiny end-to-end checkpoint to `out_dir` and returns its path."""
    from .token2wav import build_tiny_cosyvoice_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _text_tokenizer()
    processor = FunAudioChatProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        speech_tokenizer=_speech_tokenizer(),
    )
    processor.save_pretrained(out)

    config = _config(tokenizer)
    torch.manual_seed(seed)
    model = FunAudioChatForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        do_sample=False,
        repetition_penalty=1.2,
        max_new_tokens=40,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
    )
    model.save_pretrained(out)

    decoder_dir = build_tiny_cosyvoice_dir(out / "token2wav", seed=seed)
    _voices(decoder_dir / "spk2info.pt", seed)
    _voice_stand_ins(decoder_dir, seed)
    return out


def _voice_stand_ins(decoder_dir: Path, seed: int) -> None:
    try:
        write_voice_stand_ins(decoder_dir, seed=seed)
    except ImportError as error:
        logger.info("The tiny checkpoint has no voice-cloning stand-ins: %s", error)


def tiny_checkpoint(seed: int = 0) -> Path:
    """The tiny checkpoint in the Hugging Face cache, built on first use."""
    path = Path(constants.HF_HUB_CACHE) / "transformers_fac" / f"tiny-fac-v{TINY_VERSION}-seed{seed}"
    if path.is_dir() and not (path / "token2wav" / CAMPPLUS_FILE).is_file():
        _voice_stand_ins(path / "token2wav", seed)
    if not path.is_dir():
        staging = path.with_name(f"{path.name}.{os.getpid()}.incomplete")
        build_tiny_checkpoint(staging, seed=seed)
        try:
            staging.rename(path)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tiny random end-to-end Fun-Audio-Chat checkpoint.")
    parser.add_argument("out_dir", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_checkpoint(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()


__all__ = ["build_tiny_checkpoint", "tiny_checkpoint"]
