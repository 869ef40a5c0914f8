"""The "Your voice" control of the demo: record or upload a reference clip, and the replies speak in that voice.

The clip is cloned by the speech decoder (`FunAudioChatToken2Wav.clone_voice`: CAM++ speaker vector, speech codes and
mel of the clip) and saved as a voice file (about 100 KB for 10 s) in the tab's folder (`session_files`), which is
deleted when the tab closes; the file's path is the voice's id: `/add_voice` returns it (plain values only: the id,
the file, a notice), a page-only event adds it to the tab's voice list, and `/respond` takes it as its `voice` (it
reaches `Engine.speak` as a plain, picklable `speaker` string). `voice_allowed` refuses a voice file of another tab.
"""

import re
import uuid
from pathlib import Path

import gradio as gr
from session_files import session_folder

from transformers_fac.audio_io import AudioInputError

VOICE_LABEL = "{name} (your voice)"
NO_CLIP = "Record or upload a clip of your voice first (1 to 30 s of speech)."
UNKNOWN_VOICE = "Unknown voice {voice!r}: choose one of the list (a cloned voice belongs to the tab that made it)."


def voice_allowed(voice: str | None, engine, session_hash: str) -> bool:
    """Whether a tab may reply in `voice`: none (the default), a stock voice, or a voice file cloned in this tab."""
    if not voice or voice in engine.voices:
        return True
    path = Path(voice)
    folder = session_folder(engine.settings.files_dir, session_hash) / "voices"
    return path.parent == folder and path.suffix == ".safetensors" and path.is_file()


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
            voice = self.engine.model.token2wav.clone_voice(clip, name=name)
        except (AudioInputError, ValueError) as error:
            return "", None, f"⚠️ Could not use this clip: {error}", choices
        folder = session_folder(self.engine.settings.files_dir, request.session_hash) / "voices"
        path = voice.save(folder / f"{uuid.uuid4().hex}.safetensors")
        choices = [*choices, (VOICE_LABEL.format(name=name), str(path))]
        notice = (
            f"✅ Replies now speak as **{name}** ({voice.prompt_seconds:.1f} s prompt). "
            "Download the voice file to keep it."
        )
        return str(path), str(path), notice, choices

    def list_update(self, voice_id: str, choices: list[tuple[str, str]]):
        """The page's voice list with the tab's cloned voices, the new one selected (nothing when none was added)."""
        if not voice_id:
            return gr.skip()
        return gr.Dropdown(choices=self.stock_choices + choices, value=voice_id, interactive=True)


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
        voice_file = gr.File(label="Voice file (reuse it with fac-chat --voice or speaker=...)", interactive=False)
        notice = gr.Markdown(label="notice")
        voice_id = gr.Textbox(visible=False, label="voice")  # the id /respond takes as its `voice`
    add.click(
        voices.add,
        inputs=[clip, name, choices],
        outputs=[voice_id, voice_file, notice, choices],
        api_name="add_voice",
        concurrency_id="model",
    ).then(voices.list_update, inputs=[voice_id, choices], outputs=[voice_list], api_visibility="private")
    return voices


__all__ = ["UNKNOWN_VOICE", "YourVoices", "build_controls", "voice_allowed"]
