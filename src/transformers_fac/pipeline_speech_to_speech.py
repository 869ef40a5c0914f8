"""`pipeline("speech-to-speech")`: a spoken question in, a spoken (or written) reply out.

Registered on `import transformers_fac` under the tasks `"speech-to-speech"` and `"audio-to-audio"`.
"""

from typing import Any

import numpy as np
import torch
from transformers import AutoModelForMultimodalLM, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils.chat_template_utils import Chat

from .audio_io import AudioInputError, is_silent, load_audio
from .deprecation import renamed_argument
from .prompts import AUDIO_TEMPLATE, check_reply_mode, reply_system_prompt

TASKS = ("speech-to-speech", "audio-to-audio")


class FunAudioChatSpeechToSpeechPipeline(Pipeline):
    r"""Answers a spoken question with text and 24 kHz speech.

    Inputs: an audio file path or URL, encoded bytes, a 16 kHz float array, `{"array" | "raw": ..., "sampling_rate":
    ...}`, a `datasets` audio value, or a chat (a list of `{"role", "content"}` messages whose user turns hold
    `{"type": "audio", "audio" | "path" | "url": ...}` blocks; earlier assistant turns as text). A list of inputs is a
    batch and gives a list of outputs.

    Options: `generation_mode` (`"audio"` default, or `"text"`), `voice` (`"中文女"` default, `"中文男"`, a [192]
    speaker embedding, a `FunAudioChatVoice` or a saved voice's path; a voice saved next to the model or adapter is
    the default; `speaker` is its deprecated name until 0.2), `system_prompt` (default: the official prompt of the
    mode), `max_new_tokens` (5 Hz steps; 512 ≈ 100 s of speech), and any other `generate` argument.

    Output: `{"text": str, "audio": np.ndarray float32, "sampling_rate": 24000}` (`"text"` only in text mode).

    Example:

    ```python
    >>> import transformers_fac
    >>> from transformers import pipeline
    >>> chat = pipeline("speech-to-speech", model="FunAudioLLM/Fun-Audio-Chat-8B", dtype="bfloat16", device_map="auto")
    >>> reply = chat("question.wav", voice="中文女")
    >>> reply["text"], reply["audio"].shape, reply["sampling_rate"]
    ```
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=512)

    def _sanitize_parameters(
        self,
        generation_mode: str | None = None,
        voice: Any = None,
        system_prompt: str | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        **kwargs,
    ):
        mode = generation_mode or "audio"
        voice = renamed_argument(kwargs, "speaker", "voice", voice, "pipeline('speech-to-speech')")
        check_reply_mode(mode, voice, "generation_mode")
        forward = {**(generate_kwargs or {}), **kwargs, "generation_mode": mode}
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        if voice is not None:
            forward["voice"] = voice
        preprocess = {"system_prompt": system_prompt if system_prompt is not None else reply_system_prompt(mode)}
        return preprocess, forward, {}

    def preprocess(self, inputs: Any, system_prompt: str) -> dict:
        if isinstance(inputs, Chat):
            messages = list(inputs.messages)
            if messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": system_prompt})
            model_inputs = self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        else:
            waveform = load_audio(inputs)
            if is_silent(waveform):
                raise AudioInputError(
                    "The audio is silent (its level is below -60 dBFS): there is no question to answer."
                )
            messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": AUDIO_TEMPLATE}]
            prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            model_inputs = self.processor(text=prompt, audio=[waveform], return_tensors="pt")
        if "input_features" in model_inputs:
            model_inputs["input_features"] = model_inputs["input_features"].to(self.dtype)
        return dict(model_inputs)

    def _forward(self, model_inputs: dict, **generate_kwargs) -> dict:
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        mode = generate_kwargs["generation_mode"]
        if mode == "audio" and self.model.token2wav is None:
            raise ValueError(
                "Spoken replies need the CosyVoice3 decoder: load the pipeline with "
                "model_kwargs={'token2wav': <dir or Hub id>}, or use generation_mode='text'."
            )
        prompt_length = model_inputs["input_ids"].shape[1]
        output = self.model.generate(**model_inputs, **generate_kwargs, return_dict_in_generate=True)
        result = {"new_ids": output.sequences[:, prompt_length:], "generation_mode": mode}
        if mode == "audio":
            result["audio"], result["sampling_rate"] = output.audio, output.sampling_rate
        return result

    def postprocess(self, model_outputs: dict) -> dict:
        text = self.processor.decode(model_outputs["new_ids"][0], skip_special_tokens=True).strip()
        if model_outputs["generation_mode"] == "text":
            return {"text": text}
        audio = model_outputs["audio"][0]
        audio = audio.numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        return {"text": text, "audio": audio.astype(np.float32), "sampling_rate": model_outputs["sampling_rate"]}


def register_pipelines() -> None:
    """Registers the pipeline under its task names (idempotent)."""
    for task in TASKS:
        PIPELINE_REGISTRY.register_pipeline(
            task,
            pipeline_class=FunAudioChatSpeechToSpeechPipeline,
            pt_model=AutoModelForMultimodalLM,
            type="multimodal",
        )


__all__ = ["FunAudioChatSpeechToSpeechPipeline", "TASKS", "register_pipelines"]
