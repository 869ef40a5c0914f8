"""Talk to Fun-Audio-Chat in the browser: a Gradio 6 app that is also a ready Hugging Face Space.

    python spaces_demo/app.py                  # the real model (FunAudioLLM/Fun-Audio-Chat-8B) on a GPU
    FAC_MODEL=tiny python spaces_demo/app.py   # the tiny random checkpoint on CPU (plumbing only, no download)
    python spaces_demo/app.py --model tiny --port 7861

Settings come from environment variables (see `engine.Settings`) or the flags of `python app.py --help`.
The turn handling is in `chat_logic.py`, the model side in `engine.py`; this file builds the page.
"""

import spaces  # isort: skip  (ZeroGPU: must be imported before anything initialises CUDA)

import argparse
import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import chat_logic as logic
import gradio as gr
import hands_free
import your_voice
from engine import Engine, Settings
from memory import TabMemory, return_large_buffers_on_free
from session_files import remove_folder, session_folder

HERE = Path(__file__).resolve().parent
EXAMPLES = [
    (HERE / "examples" / "question_en.wav", "English question (synthesized)"),
    (HERE / "examples" / "question_zh.wav", "Chinese question (synthesized)"),
]
THEME = gr.themes.Default(primary_hue="indigo", secondary_hue="pink")
LAUNCH_OPTIONS = {"theme": THEME, "allowed_paths": [str(HERE / "examples")]}
"""What `launch()` needs besides the address (Gradio 6 takes the theme there)."""

VOICE_NAMES = {"中文女": "female", "中文男": "male"}
PAUSE_PLAYBACK = "() => { document.querySelectorAll('audio').forEach((audio) => audio.pause()); }"
"""Barge-in and stop also silence the reply already buffered in the browser."""


NOTICE_ICONS = {logic.STOPPED_NOTICE: "⏹️", logic.NO_TOOL_CALL: "ℹ️"}


def notice_markdown(notice: str) -> str:
    """A notice for the page: a warning sign unless it is only information."""
    return f"{NOTICE_ICONS.get(notice, '⚠️')} {notice}" if notice else ""


def model_title(model: str) -> str:
    """The model's name for the page's header: the one actually running."""
    if model == "tiny":
        return "a tiny random test model (it speaks gibberish)"
    return Path(model.rstrip("/")).name or model


def build_demo(engine: Engine) -> gr.Blocks:
    """The page, wired to a loaded `engine`. Per-tab state lives in `gr.State`; the model is shared."""
    settings = engine.settings
    tabs = TabMemory()  # the tabs' states, closed when their tab closes

    @spaces.GPU(duration=settings.gpu_duration)
    def speak(inputs, spoken: bool, voice: str | None):
        yield from engine.speak(inputs, spoken, voice)

    @spaces.GPU(duration=settings.gpu_duration)
    def write(inputs) -> str:
        return engine.write(inputs)

    def respond(audio, mode, voice, persona, free_prompt, session: logic.DemoSession, request: gr.Request):
        try:
            voice = your_voice.engine_voice(voice, engine, request.session_hash)
        except logic.FriendlyError as error:  # a notice beside the conversation, which stays as it is
            yield list(session.history), None, notice_markdown(str(error)), session
            return
        if session.files.folder is None:  # the session's audio files go to a folder of its own
            session.files.folder = session_folder(settings.files_dir, request.session_hash)
        tabs.add(request.session_hash, session)
        with tabs.reply():
            for update in logic.respond(
                session, speak, engine.processor, audio, mode, voice, persona, free_prompt, settings.max_seconds
            ):
                yield update.history, update.audio, notice_markdown(update.notice), session

    def new_conversation(session: logic.DemoSession):
        session.reset()
        return [], None, "", session

    def stop(session: logic.DemoSession):
        session.stop()

    def end_session(request: gr.Request):
        """The tab was closed: its audio files and its states go at once (Gradio drops the states an hour later)."""
        remove_folder(session_folder(settings.files_dir, request.session_hash))
        tabs.close_tab(request.session_hash)

    def call_tools(audio, tools_json):
        result = logic.call_tools(write, engine.processor, audio, tools_json, settings.max_seconds)
        return result.reply, result.calls, notice_markdown(result.notice)

    def voice_control(mode):
        return gr.Dropdown(interactive=mode == logic.SPEECH)

    limit = f"max {settings.max_seconds} s"
    voices = [(f"{name} ({VOICE_NAMES.get(name, 'voice')})", name) for name in engine.voices]
    with gr.Blocks(title="Fun-Audio-Chat", delete_cache=settings.delete_cache) as demo:
        session = gr.State(
            logic.DemoSession(audio_turns=settings.audio_turns), delete_callback=logic.DemoSession.close
        )
        gr.Markdown(
            "# 🎙️ Fun-Audio-Chat\n"
            f"Ask a question out loud and hear **{model_title(settings.model)}** answer: the spoken reply streams as "
            "it is generated and its transcript appears live in the chat. Record a new question at any time to "
            "interrupt (barge-in). "
            f"Model: `{settings.model}`; questions up to {settings.max_seconds} s."
        )
        with gr.Tabs():
            with gr.Tab("Voice chat", id="chat"):
                with gr.Row():
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(
                            label="Conversation",
                            height=480,
                            buttons=["copy_all"],
                            placeholder="Your questions and the assistant's replies (text and audio) appear here.",
                        )
                        reply_audio = gr.Audio(
                            label="Spoken reply (live)",
                            streaming=True,
                            autoplay=True,
                            interactive=False,
                            buttons=["download"],
                        )
                        notice = gr.Markdown(label="notice")
                    with gr.Column(scale=2):
                        question = gr.Audio(
                            sources=["microphone", "upload"],
                            type="filepath",
                            label=f"Your question ({limit})",
                            elem_id="question",
                        )
                        with gr.Row():
                            send = gr.Button("Send", variant="primary")
                            stop_button = gr.Button("Stop", variant="stop")
                            new_chat = gr.Button("New conversation")
                        mode = gr.Radio(logic.MODES, value=logic.SPEECH, label="Reply mode")
                        # custom values: API clients name a voice that /add_voice returned; a name that is no voice
                        # gets a warning (your_voice.YourVoices.check_choice) and replies refuse it with a notice
                        voice = gr.Dropdown(voices, value=engine.default_voice, label="Voice", allow_custom_value=True)
                        your_voice.build_controls(engine, voice, voices)
                        persona = gr.Dropdown(list(logic.PERSONAS), value=logic.XIAOYUN, label="Persona")
                        free_prompt = gr.Textbox(
                            value="",
                            label="Your own instructions (optional)",
                            placeholder="e.g. Answer in Cantonese. / Speak slowly and cheerfully.",
                            lines=2,
                        )
                        with gr.Accordion("System prompt sent to the model", open=False):
                            prompt_preview = gr.Textbox(
                                value=logic.system_prompt(logic.SPEECH, logic.XIAOYUN, ""),
                                label="System prompt",
                                show_label=False,
                                interactive=False,
                                lines=4,
                            )
                        gr.Examples(
                            [[str(path)] for path, _ in EXAMPLES],
                            inputs=[question],
                            example_labels=[label for _, label in EXAMPLES],
                            label="Example questions",
                        )
            hands_free.build_tab(engine, tabs, mode, voice, persona, free_prompt)
            with gr.Tab("Function calling", id="tools"):
                gr.Markdown(
                    "Paste tool definitions (JSON, OpenAI style), ask for something out loud, and see which tools the "
                    "model calls. The reply is text (speech-to-text mode with the official function-calling prompt)."
                )
                with gr.Row():
                    with gr.Column():
                        tools_question = gr.Audio(
                            sources=["microphone", "upload"], type="filepath", label=f"Your request ({limit})"
                        )
                        ask = gr.Button("Ask", variant="primary")
                        tools_json = gr.Code(
                            value=json.dumps(logic.EXAMPLE_TOOLS, ensure_ascii=False, indent=2),
                            language="json",
                            label="Tool definitions (JSON)",
                            max_lines=18,
                        )
                    with gr.Column():
                        tools_reply = gr.Textbox(label="Model reply", lines=6, interactive=False)
                        tool_calls = gr.JSON(label="Parsed tool calls")
                        tools_notice = gr.Markdown(label="notice")
                gr.Examples([[str(EXAMPLES[0][0])]], inputs=[tools_question], label="Example request")

        gr.on(
            [send.click, question.stop_recording],
            respond,
            inputs=[question, mode, voice, persona, free_prompt, session],
            outputs=[chatbot, reply_audio, notice, session],
            api_name="respond",
            concurrency_limit=settings.concurrency,
            concurrency_id="model",
            trigger_mode="always_last",
        )
        for trigger, name in ((stop_button.click, "stop"), (question.start_recording, "barge_in")):
            trigger(stop, inputs=[session], api_name=name, concurrency_limit=None)
            trigger(None, js=PAUSE_PLAYBACK, api_visibility="private")
        for trigger, name in ((new_chat.click, "new_conversation"), (chatbot.clear, "clear_chat")):
            trigger(
                new_conversation,
                inputs=[session],
                outputs=[chatbot, reply_audio, notice, session],
                api_name=name,
                concurrency_limit=None,
            )
        ask.click(
            call_tools,
            inputs=[tools_question, tools_json],
            outputs=[tools_reply, tool_calls, tools_notice],
            api_name="call_tools",
            concurrency_limit=settings.concurrency,
            concurrency_id="model",
        )
        mode.change(voice_control, inputs=[mode], outputs=[voice], api_visibility="private")  # page only
        demo.unload(end_session)
        gr.on(
            [mode.change, persona.change, free_prompt.change],
            logic.system_prompt,
            inputs=[mode, persona, free_prompt],
            outputs=[prompt_preview],
            api_name="system_prompt",
        )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fun-Audio-Chat Gradio demo. Flags override the FAC_* variables.")
    parser.add_argument("--model", help="Hub id or directory, or 'tiny' for the tiny CPU checkpoint [FAC_MODEL]")
    parser.add_argument("--max-new-tokens", type=int, help="longest reply in LLM steps [FAC_MAX_NEW_TOKENS]")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compiled decoding of fixed slots (CUDA graphs on a GPU) [FAC_COMPILE=1]",
    )
    parser.add_argument(
        "--decoder-process",
        action="store_true",
        help="on a CPU, decode speech after each first chunk in a child process [FAC_DECODER_PROCESS=1]",
    )
    parser.add_argument("--host", help="server name (default: Gradio's; GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, help="server port (default: Gradio's, 7860; GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a public share link")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    environ = dict(os.environ)
    if args.model:
        environ["FAC_MODEL"] = args.model
    if args.max_new_tokens:
        environ["FAC_MAX_NEW_TOKENS"] = str(args.max_new_tokens)
    if args.compile:
        environ["FAC_COMPILE"] = "1"
    if args.decoder_process:
        environ["FAC_DECODER_PROCESS"] = "1"
    settings = Settings.from_env(environ)
    # SIGTERM (how containers and Spaces stop an app) stops it as Ctrl-C does, and either way the files of this run go
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return_large_buffers_on_free()  # freed tensors go back to the system (memory.py)
    with run_folders(settings):
        engine = Engine.load(settings)
        try:
            demo = build_demo(engine)
            demo.queue(default_concurrency_limit=settings.concurrency)
            try:
                demo.launch(server_name=args.host, server_port=args.port, share=args.share, **LAUNCH_OPTIONS)
            finally:
                demo.close()
        finally:
            engine.close()


@contextlib.contextmanager
def run_folders(settings: Settings) -> Iterator[None]:
    """Gives this run folders of its own inside `settings.files_dir` (the chats' audio) and Gradio's temporary folder
    (`GRADIO_TEMP_DIR`: uploads, served copies, stream playlists), and deletes both when the app stops, with the files
    of the tabs still open: Gradio alone keeps the files of streams still open at exit."""
    gradio_root = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    folders = []
    for root in (Path(settings.files_dir), gradio_root):
        root.mkdir(parents=True, exist_ok=True)
        folders.append(tempfile.mkdtemp(prefix="fac-demo-run-", dir=root))
    settings.files_dir, os.environ["GRADIO_TEMP_DIR"] = folders  # read when the page is built
    try:
        yield
    finally:
        for folder in folders:
            remove_folder(folder)


if __name__ == "__main__":
    main()
