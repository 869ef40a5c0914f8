"""Multi-turn spoken conversations: the prompt for the next reply, built as the official examples build it.

User turns are audio (each rendered as `<|audio_bos|><|AUDIO|><|audio_eos|>`); earlier assistant replies go back in
as text only (the assistant's speech is never fed back); only the last `max_turns` exchanges are kept.
"""

from dataclasses import dataclass, field
from typing import Any

AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"


@dataclass
class Turn:
    """One exchange: the user's audio (anything the processor accepts), an optional text instruction after it,
    and the assistant's reply text once known."""

    audio: Any
    instruction: str | None = None
    reply: str | None = None


@dataclass
class FunAudioChatConversation:
    """The state of a spoken chat.

    Example:

    ```python
    >>> chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    >>> chat.add_user_audio(waveform_16khz)
    >>> inputs = chat.model_inputs(processor)
    >>> sequences, speech_ids = model.generate(**inputs, generation_mode="audio")
    >>> chat.add_assistant_reply(processor.decode(sequences[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    ```
    """

    system_prompt: str
    max_turns: int = 8
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {self.max_turns}.")

    def add_user_audio(self, audio: Any, instruction: str | None = None) -> None:
        """Starts a new exchange with the user's audio."""
        if self.turns and self.turns[-1].reply is None:
            raise ValueError("The previous user turn has no assistant reply yet: call add_assistant_reply first.")
        self.turns.append(Turn(audio=audio, instruction=instruction))

    def add_assistant_reply(self, text: str) -> None:
        """Records the assistant's reply (text; special tokens already removed) to the last user turn."""
        if not self.turns or self.turns[-1].reply is not None:
            raise ValueError("There is no user turn waiting for a reply.")
        self.turns[-1].reply = text.strip()

    def reset(self) -> None:
        """Forgets every exchange (a new conversation with the same system prompt)."""
        self.turns.clear()

    def kept_turns(self) -> list[Turn]:
        return self.turns[-self.max_turns :]

    def messages(self) -> list[dict[str, str]]:
        """Chat messages (string contents) of the kept turns, ending with the pending user turn."""
        messages = [{"role": "system", "content": self.system_prompt}]
        for turn in self.kept_turns():
            content = AUDIO_PLACEHOLDER if turn.instruction is None else f"{AUDIO_PLACEHOLDER}\n{turn.instruction}"
            messages.append({"role": "user", "content": content})
            if turn.reply is not None:
                messages.append({"role": "assistant", "content": turn.reply})
        return messages

    def audios(self) -> list[Any]:
        """The user audios of the kept turns, in prompt order."""
        return [turn.audio for turn in self.kept_turns()]

    def prompt(self, processor) -> str:
        """The rendered prompt text, ready for `processor(text=..., audio=self.audios())`."""
        if not self.turns or self.turns[-1].reply is not None:
            raise ValueError("Add the user's audio (add_user_audio) before asking for the next prompt.")
        return processor.apply_chat_template(self.messages(), add_generation_prompt=True, tokenize=False)

    def model_inputs(self, processor, return_tensors: str = "pt"):
        """Processor outputs for the next reply."""
        return processor(text=self.prompt(processor), audio=self.audios(), return_tensors=return_tensors)


__all__ = ["AUDIO_PLACEHOLDER", "FunAudioChatConversation", "Turn"]
