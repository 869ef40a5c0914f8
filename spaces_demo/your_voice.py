"""The "Your voice" control of the demo: record or upload a reference clip, and the replies speak in that voice.

The clip is cloned by the speech decoder (`FunAudioChatToken2Wav.clone_voice`: CAM++ speaker vector, speech codes and
mel of the clip) and saved as a voice file (about 100 KB for 10 s) in the tab's folder (`session_files`), which is
deleted when the tab closes. The voice's id is a short name (`cloned-<32 hex digits>`), never a server path:
`/add_voice` returns it (plain values only: the id, the file, a notice), a page-only event adds it to the tab's voice
list, and `/respond` takes it as its `voice`. `engine_voice` turns a voice of the list into what `Engine.speak` takes
(a stock voice's name or the voice file's path, a plain picklable string) and refuses any other voice, including a
voice cloned in another tab.
"""

import re
import uuid
from pathlib import Path

import gradio as gr
from chat_logic import NOT_AUDIO, FriendlyError
from session_files import session_folder

from transformers_fac.audio_io import SAMPLING_RATE, AudioInputError, is_silent, load_audio

VOICE_LABEL = "{name} (your voice)"
VOICE_ID = re.compile(r"cloned-[0-9a-f]{32}")
MIN_CLIP_S, MAX_CLIP_S = 1.0, 30.0
"""The clip lengths the decoder clones (CosyVoice3's); a longer clip is cloned from its first 30 s."""
NO_CLIP = "Record or upload a clip of your voice first (1 to 30 s of speech)."
UNKNOWN_VOICE = "Unknown voice {voice}: choose one of the list (a cloned voice belongs to the tab that made it)."
CLONING_FAILED = "Could not use this clip: record 3 to 15 s of clear speech, with little background noise."


def engine_voice(voice: str | None, engine, session_hash: str) -> str | None:
    """What `Engine.speak` takes for `voice`: None (the default voice) for no voice, a stock voice's name, or the
    file of a voice cloned in this tab; any other voice raises a `FriendlyError`."""
    if not voice:
        return None
    if voice in engine.voices:
        return voice
    if VOICE_ID.fullmatch(voice):
        path = voice_path(engine, session_hash, voice)
        if path.is_file():
            return str(path)
    shown = repr(voice) if len(voice) <= 60 else repr(voice[:57] + "...")
    raise FriendlyError(UNKNOWN_VOICE.format(voice=shown))


def voice_path(engine, session_hash: str, voice_id: str) -> Path:
    """Where the voice `voice_id` of a tab is saved."""
    return session_folder(engine.settings.files_dir, session_hash) / "voices" / f"{voice_id}.safetensors"


def check_clip(clip: str) -> float:
    """The length in seconds of a reference clip that can be cloned, else a `FriendlyError` meant for the user."""
    try:
        waveform = load_audio(clip, validate=False)
    except AudioInputError as error:
        raise FriendlyError(NOT_AUDIO) from error
    seconds = waveform.size / SAMPLING_RATE
    if seconds < MIN_CLIP_S:
        raise FriendlyError(
            f"Could not use this clip: it lasts {seconds:.1f} s, too short to clone a voice. "
            "Record 1 to 30 s of your speech (3 to 15 s of clear speech work best)."
        )
    if is_silent(waveform):
        raise FriendlyError("Could not use this clip: it is silent. Record some speech and check the microphone.")
    return seconds


class YourVoices:
    """Clones clips with the engine's decoder; the voice files go to the tab's folder."""

    def __init__(self, engine, stock_choices: list[tuple[str, str]]):
        self.engine = engine
        self.stock_choices = list(stock_choices)

    def add(self, clip: str | None, name: str, choices: list[tuple[str, str]], request: gr.Request):
        """Clone `clip`; returns (the new voice's id or "", voice file, notice, the tab's choices)."""
        if not clip:
            return "", None, f"⚠️ {NO_CLIP}", choices
        name = re.sub(r"\s+", " ", (name or "").strip())[:40] or f"voice {len(choices) + 1}"
        try:
            seconds = check_clip(clip)
            voice = self.engine.model.token2wav.clone_voice(clip, name=name, trim=True)
        except FriendlyError as error:
            return "", None, f"⚠️ {error}", choices
        except (AudioInputError, ValueError):  # the library's own checks: its text is not for users
            return "", None, f"⚠️ {CLONING_FAILED}", choices
        voice_id = f"cloned-{uuid.uuid4().hex}"
        path = voice.save(voice_path(self.engine, request.session_hash, voice_id))
        choices = [*choices, (VOICE_LABEL.format(name=name), voice_id)]
        trimmed = f" (its first {MAX_CLIP_S:g} s)" if seconds > MAX_CLIP_S else ""
        notice = (
            f"✅ Replies now speak as **{name}**{trimmed} ({voice.prompt_seconds:.1f} s prompt). "
            "Download the voice file to keep it."
        )
        return voice_id, str(path), notice, choices

    def list_update(self, voice_id: str, choices: list[tuple[str, str]]):
        """The page's voice list with the tab's cloned voices, the new one selected (nothing when none was added)."""
        if not voice_id:
            return gr.skip()
        return gr.Dropdown(choices=self.stock_choices + choices, value=voice_id, interactive=True)

    def check_choice(self, voice: str | None, request: gr.Request):
        """A name typed into the voice list that is no voice: a warning, and the list goes back to the default."""
        try:
            engine_voice(voice, self.engine, request.session_hash)
        except FriendlyError as error:
            gr.Warning(str(error))
            return gr.Dropdown(value=self.engine.default_voice)
        return gr.skip()


def build_controls(engine, voice_list: gr.Dropdown, stock_choices: list[tuple[str, str]]) -> YourVoices:
    """The "Your voice" accordion (inside the page's Blocks) feeding `voice_list`; adds the `/add_voice` API."""
    voices = YourVoices(engine, stock_choices)
    choices = gr.State([])
    with gr.Accordion("Your voice", open=False):
        clip = gr.Audio(
            sources=["microphone", "upload"], type="filepath", label="Reference clip (1–30 s of your speech)"
        )
        name = gr.Textbox(label="Name", placeholder="my voice", max_lines=1)
        add = gr.Button("Use this voice")
        voice_file = gr.File(label="Voice file (reuse it with fac-chat --voice or voice=...)", interactive=False)
        notice = gr.Markdown(label="notice")
        voice_id = gr.Textbox(visible=False, label="voice")  # the id /respond takes as its `voice`
    add.click(
        voices.add,
        inputs=[clip, name, choices],
        outputs=[voice_id, voice_file, notice, choices],
        api_name="add_voice",
        concurrency_id="model",
    ).then(voices.list_update, inputs=[voice_id, choices], outputs=[voice_list], api_visibility="private")
    voice_list.input(voices.check_choice, inputs=[voice_list], outputs=[voice_list], api_visibility="private")
    return voices


__all__ = ["UNKNOWN_VOICE", "YourVoices", "build_controls", "engine_voice"]
