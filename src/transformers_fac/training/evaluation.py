"""Evaluate a (fine-tuned) Fun-Audio-Chat model on held-out examples: teacher-forced losses and speech-code accuracy,
generated replies, speech–text consistency (WER/CER between the generated text and an ASR transcript of the
generated speech, when the model has a token-to-waveform decoder and an ASR function is given), and speaker similarity
(cosine of CAM++ speaker vectors between the generated speech and a reference voice or clip)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .collator import FunAudioChatDataCollator
from .metrics import speech_text_consistency, teacher_forced_metrics


@torch.no_grad()
def generate_replies(
    model,
    collator: FunAudioChatDataCollator,
    examples: Sequence[Mapping[str, Any]],
    generation_mode: str = "audio",
    max_new_tokens: int = 256,
    **generate_kwargs,
) -> list[dict]:
    """Generate a reply to each example's prompt (one at a time). Returns per example `text` (special tokens
    removed), `speech_codes` (the codes the decoder accepts), and `audio` / `sampling_rate` when the model decoded speech."""
    generate_kwargs = {"do_sample": False, **generate_kwargs}
    device = next(model.parameters()).device
    processor = collator.processor
    replies = []
    for example in examples:
        inputs = {key: value.to(device) for key, value in collator.prompt_inputs([example]).items()}
        output = model.generate(
            **inputs,
            generation_mode=generation_mode,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            **generate_kwargs,
        )
        new_tokens = output.sequences[0, inputs["input_ids"].shape[1] :]
        reply = {"text": processor.decode(new_tokens, skip_special_tokens=True).strip(), "speech_codes": []}
        if hasattr(output, "valid_speech_codes"):
            reply["speech_codes"] = output.valid_speech_codes()[0].tolist()
        audio = getattr(output, "audio", None)
        if audio:
            waveform = audio[0]
            waveform = waveform.detach().float().cpu().numpy() if hasattr(waveform, "detach") else waveform
            reply.update(audio=waveform.reshape(-1), sampling_rate=output.sampling_rate)
        replies.append(reply)
    return replies


def evaluate_model(
    model,
    collator: FunAudioChatDataCollator,
    examples: Sequence[Mapping[str, Any]],
    transcribe: Callable[[dict], str] | None = None,
    generate: bool = True,
    generation_mode: str = "audio",
    max_new_tokens: int = 256,
    batch_size: int = 1,
    voice: Any = None,
    reference_voice: Any = None,
) -> dict:
    """Metrics of `model` on `examples` (prepared rows or official-format conversations):

    - `text_loss`, `perplexity`, `speech_loss`, `speech_code_accuracy`: teacher-forced, see `teacher_forced_metrics`;
    - with `generate=True`: `samples` (the generated replies) and, when `transcribe` is given and the model produced
      audio, `consistency_wer` / `consistency_cer` between the generated text and `transcribe({"raw": waveform,
      "sampling_rate": rate})` (e.g. a transformers ASR pipeline);
    - `voice` is the voice the replies are spoken in (default: the decoder's default voice); with a
      `reference_voice` (a clip, a `FunAudioChatVoice` or a speaker vector), `speaker_similarity` is the mean cosine
      between the CAM++ vectors of the spoken replies (those of at least 1 s) and the reference.
    """
    examples = list(examples)
    results = teacher_forced_metrics(model, collator, examples, batch_size=batch_size)
    if not generate:
        return results
    voice_kwargs = {"voice": voice} if voice is not None and generation_mode == "audio" else {}
    replies = generate_replies(model, collator, examples, generation_mode, max_new_tokens, **voice_kwargs)
    results["samples"] = [reply["text"] for reply in replies]
    spoken = [reply for reply in replies if reply.get("audio") is not None]
    if transcribe is not None and spoken:
        consistency = speech_text_consistency(
            [reply["text"] for reply in spoken],
            [{"raw": reply["audio"], "sampling_rate": reply["sampling_rate"]} for reply in spoken],
            transcribe,
        )
        results["consistency_wer"], results["consistency_cer"] = consistency["wer"], consistency["cer"]
        results["transcripts"] = consistency["transcripts"]
    if reference_voice is not None and spoken:
        similarity = reply_speaker_similarity(model, spoken, reference_voice)
        if similarity is not None:
            results["speaker_similarity"] = similarity
    return results


def reply_speaker_similarity(model, replies: Sequence[Mapping[str, Any]], reference: Any) -> float | None:
    """Mean speaker similarity (`FunAudioChatToken2Wav.speaker_similarity`) of spoken replies (`{"audio",
    "sampling_rate"}`) to `reference` (a clip, a voice or its path, or a vector); replies too short or silent to embed
    are left out (None if all are)."""
    from ..audio_io import AudioInputError
    from ..voice import FunAudioChatVoice, is_voice_path

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.token2wav
    if is_voice_path(reference):
        reference = decoder.resolve_voice(reference)
    elif not isinstance(reference, (FunAudioChatVoice, torch.Tensor)):
        reference = decoder.voice_frontend.speaker_vector(reference, trim=True)
    scores = []
    for reply in replies:
        try:
            scores.append(decoder.speaker_similarity((reply["audio"], reply["sampling_rate"]), reference))
        except AudioInputError:
            continue
    return sum(scores) / len(scores) if scores else None


__all__ = ["evaluate_model", "generate_replies", "reply_speaker_similarity"]
