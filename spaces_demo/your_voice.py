"""The "Your voice" control of the demo: record or upload a reference clip, and the replies speak in that voice.

The clip is cloned by the speech decoder (`FunAudioChatToken2Wav.clone_voice`: CAM++ speaker vector, speech codes and
mel of the clip) and saved as a voice file (about 100 KB for 10 s) in the tab's folder (`session_files`), which is
deleted when the tab closes; the file's path becomes a choice of the tab's voice list (so it reaches `Engine.speak` as
a plain, picklable `speaker` string; Gradio refuses it from other tabs) and is offered for download.
"""

import re
import uuid

import gradio as gr
from session_files import session_folder

from transformers_fac.audio_io import AudioInputError

VOICE_LABEL = "{name} (your voice)"
NO_CLIP = "Record or upload a clip of your voice first (1 to 30 s of speech)."


class YourVoices:
    """Clones clips with the engine's decoder; the voice files go to the tab's folder."""

    def __init__(self, engine, stock_choices: list[tuple[str, str]]):
        self.engine = engine
        self.stock_choices = list(stock_choices)

    def add(self, clip: str | None, name: str, choices: list[tuple[str, str]], request: gr.Request):
        """Clone `clip`; returns (voice list update, voice file, notice, the tab's choices)."""
        if not clip:
            return gr.skip(), None, f"⚠️ {NO_CLIP}", choices
        name = re.sub(r"\s+", " ", (name or "").strip())[:40] or f"voice {len(choices) + 1}"
        try:
            voice = self.engine.model.token2wav.clone_voice(clip, name=name)
        except (AudioInputError, ValueError) as error:
            return gr.skip(), None, f"⚠️ Could not use this clip: {error}", choices
        folder = session_folder(self.engine.settings.files_dir, request.session_hash) / "voices"
        path = voice.save(folder / f"{uuid.uuid4().hex}.safetensors")
        choices = [*choices, (VOICE_LABEL.format(name=name), str(path))]
        update = gr.Dropdown(choices=self.stock_choices + choices, value=str(path), interactive=True)
        notice = (
            f"✅ Replies now speak as **{name}** ({voice.prompt_seconds:.1f} s prompt). "
            "Download the voice file to keep it."
        )
        return update, str(path), notice, choices


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
    add.click(
        voices.add,
        inputs=[clip, name, choices],
        outputs=[voice_list, voice_file, notice, choices],
        api_name="add_voice",
        concurrency_id="model",
    )
    return voices


__all__ = ["YourVoices", "build_controls"]
