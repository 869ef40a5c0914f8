"""Input audio transcription of realtime sessions (`audio.input.transcription`): the served model's own speech
recognition, in its text mode with the official instruction (`ASR_INSTRUCTION`), streamed as
`conversation.item.input_audio_transcription.delta` events and ended by `.completed` (or `.failed`)."""

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from ..engine import EngineClosed, QueueFull, ReplyDone, ReplyFailed, ReplyRequest, RequestError, TextDelta
from ..prompts import ASR_INSTRUCTION, AUDIO_TEMPLATE
from .prompting import Prompt, system_prompt
from .runtime import ServerRuntime


def transcription_request(audio: np.ndarray, runtime: ServerRuntime) -> ReplyRequest:
    """The greedy text-mode request that transcribes one user turn (16 kHz audio)."""
    messages = [
        {"role": "system", "content": system_prompt(spoken=False, tools=None)},
        {"role": "user", "content": f"{AUDIO_TEMPLATE}\n{ASR_INSTRUCTION}"},
    ]
    prompt = Prompt(messages=messages, audios=[audio]).render(runtime.loaded.processor)
    return ReplyRequest(
        prompt=prompt, audios=[audio], spoken=False, max_new_tokens=runtime.settings.max_new_tokens, temperature=0
    )


async def transcribe(
    item_id: str, audio: np.ndarray, runtime: ServerRuntime, send: Callable[[dict], Awaitable]
) -> str:
    """Transcribes a committed user turn, sending its events with `send`; the transcript ("" when it failed)."""
    where = {"item_id": item_id, "content_index": 0}
    request = transcription_request(audio, runtime)
    try:
        reply = await asyncio.to_thread(runtime.engine.submit, request, asyncio.get_running_loop())
    except (RequestError, QueueFull, EngineClosed) as error:
        await _failed(send, where, str(error))
        return ""
    runtime.track(reply)
    try:
        async for event in reply:
            if isinstance(event, TextDelta):
                await send({"type": "conversation.item.input_audio_transcription.delta", **where, "delta": event.text})
            elif isinstance(event, ReplyDone):
                transcript = event.text.strip()
                usage = {
                    "type": "tokens",
                    "input_tokens": event.prompt_tokens,
                    "output_tokens": event.completion_tokens,
                    "total_tokens": event.prompt_tokens + event.completion_tokens,
                    "input_token_details": {
                        "audio_tokens": event.prompt_audio_tokens,
                        "text_tokens": event.prompt_tokens - event.prompt_audio_tokens,
                    },
                }
                completed = {"type": "conversation.item.input_audio_transcription.completed", **where}
                await send({**completed, "transcript": transcript, "usage": usage})
                return transcript
            elif isinstance(event, ReplyFailed):
                await _failed(send, where, event.message)
        return ""
    finally:
        runtime.untrack(reply)
        if not reply.finished:
            reply.cancel()


async def _failed(send: Callable[[dict], Awaitable], where: dict, message: str) -> None:
    error = {"type": "server_error", "code": "transcription_failed", "message": message, "param": None}
    await send({"type": "conversation.item.input_audio_transcription.failed", **where, "error": error})


__all__ = ["transcribe", "transcription_request"]
