"""The demo's hands-free mode: the microphone streams to a live `VoiceSession` (voice activity, end of turn,
barge-in), the reply streams back, and the page shows the live state (listening / thinking / speaking).

Two events drive it: the microphone's `.stream` feeds each chunk (every `STREAM_EVERY` s) to the session and
refreshes the transcript and the state; when a reply starts, a generator event plays it into the streaming reply
player (one player stream per reply) until it is done or interrupted. The model runs in the session's own threads,
so hands-free needs a Space with a dedicated GPU (or the tiny model on CPU), not ZeroGPU.
"""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import chat_logic as logic
import gradio as gr
import numpy as np
from session_files import SessionFiles, session_folder
from your_voice import engine_voice

from transformers_fac.audio_io import SAMPLING_RATE

STREAM_EVERY = 0.5
"""Seconds of microphone audio per chunk sent by the page."""
POLL_S = 0.1
"""How often the reply player looks for new reply audio."""
PLAYBACK_DELAY_S = 1.4
"""Seconds from reply audio reaching the page's streaming player to it being heard (Gradio's HLS player buffers;
measured 1.36-1.38 s in Chromium on the same machine): the session counts a reply as playing, and as heard, from then.
"""
IDLE_LIMIT_S = 120.0
"""A reply player that receives nothing for this long ends (a session closed under it)."""

STATES = {
    "listening": "🟢 **Listening** — just talk; pause to let it answer, talk over it to interrupt.",
    "hearing": "🎙️ **Hearing you…**",
    "thinking": "💭 **Thinking…**",
    "speaking": "🔊 **Speaking** — talk to interrupt.",
    "off": "⏸️ **Off** — press Record (or reopen this tab) to start.",
}
INTERRUPTED = " … (interrupted)"
START_MICROPHONE = (Path(__file__).resolve().parent / "hands_free.js").read_text(encoding="utf-8")
"""Choosing the tab starts the microphone (no further click) and restarts it until it runs: see the script."""


class HandsFree:
    """One browser tab's hands-free conversation (lives in a `gr.State`): the live session, the chat shown (with the
    audio files of its last `audio_turns` turns), and a queue of reply audio per reply for the player."""

    def __init__(self, audio_turns: int = 8):
        self.session = None
        self.history: list[dict] = []
        self.files = SessionFiles(max_turns=audio_turns)
        self.reply_id = 0
        self.interruptions = 0
        self._messages: dict[int, tuple[dict, dict]] = {}  # turn -> (user message, assistant message)
        self._audio: dict[int, list[np.ndarray]] = {}  # turn -> reply audio handed out
        self._rate = 24000  # of the reply audio
        self._players: dict[int, Queue] = {}  # reply id -> audio chunks for its player (None ends it)
        self._turn_reply: dict[int, int] = {}  # turn -> reply id
        self._reply_spoke = False  # the reply in progress has handed out audio
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "HandsFree":
        return HandsFree(self.files.max_turns)  # gr.State copies its initial value per tab: each tab gets a fresh one

    # ------------------------------------------------------------------------------------------------ input
    def feed(self, engine, chunk, mode: str, voice: str | None, persona: str | None, free_prompt: str | None) -> str:
        """One microphone chunk (`(rate, int16 array)`), `voice` as `Engine.speak` takes it; returns a notice ("" when
        all is well)."""
        if chunk is None:
            return ""
        rate, samples = chunk
        try:
            session = self._session(engine)
            spoken = mode == logic.SPEECH
            prompt = logic.system_prompt(mode, persona, free_prompt)
            session.update(
                voice=voice if spoken else None, reply_mode="audio" if spoken else "text", system_prompt=prompt
            )
        except (logic.FriendlyError, ValueError) as error:
            return str(error)
        self._route(session.feed(samples, rate))
        return ""

    def pump(self) -> None:
        """Reply events produced since the last chunk (the player calls this between chunks)."""
        if self.session is not None:
            self._route(self.session.poll())

    def _session(self, engine):
        if self.session is None:
            from transformers_fac.live import VoiceSession

            self.session = VoiceSession(
                engine.model,
                engine.processor,
                realtime=True,
                echo_cancelled=False,  # the page opens the microphone without the browser's echo cancellation
                playback_delay_s=PLAYBACK_DELAY_S,
                max_new_tokens=engine.settings.max_new_tokens,
            )
        return self.session

    def state(self) -> str:
        if self.session is None:
            return STATES["off"]
        if self.session.user_speaking:
            return STATES["hearing"]
        state = self.session.state
        if state == "thinking" and self._reply_spoke:  # a reply generated slower than real time, between two chunks
            state = "speaking"
        return STATES[state]

    # ------------------------------------------------------------------------------------------------ events
    def _route(self, events) -> None:
        with self._lock:
            for event in events:
                getattr(self, f"_on_{event.type}", lambda event: None)(event)

    def _on_speech_stopped(self, event) -> None:
        if event.turn in self._messages:  # the same question, continued after a pause: its reply was dropped
            old_user, old_answer = self._messages[event.turn]
            self.history = [m for m in self.history if m is not old_user and m is not old_answer]
        else:
            dropped = self.files.new_turn()  # the oldest turn beyond `audio_turns` loses its audio
            self.history = [m for m in self.history if not _is_file_in(m, dropped)]
        user = logic.audio_message("user", self.files.save(event.audio, SAMPLING_RATE))
        answer = {"role": "assistant", "content": "…"}
        self.history += [user, answer]
        self._messages[event.turn] = (user, answer)
        self._audio[event.turn] = []

    def _on_reply_started(self, event) -> None:
        self.reply_id += 1
        self._turn_reply[event.turn] = self.reply_id
        self._players[self.reply_id] = Queue()
        self._reply_spoke = False

    def _on_text(self, event) -> None:
        answer = self._messages[event.turn][1]
        answer["content"] = ("" if answer["content"] == "…" else answer["content"]) + event.text

    def _on_audio(self, event) -> None:
        self._audio[event.turn].append(event.audio)
        self._reply_spoke = True
        self._rate = event.sampling_rate
        self._player(event.turn).put((event.audio, event.sampling_rate))

    def _on_interrupted(self, event) -> None:
        self.interruptions += 1
        self._player(event.turn).put(None)
        user, answer = self._messages[event.turn]
        if event.heard_s == 0 and event.text == "":
            self.history = [m for m in self.history if m is not answer]
            return
        answer["content"] = (event.text or "(no words)") + INTERRUPTED
        self._add_reply_audio(event.turn, keep=round(event.heard_s * self._rate))

    def _on_reply_done(self, event) -> None:
        self._player(event.turn).put(None)
        self._messages[event.turn][1]["content"] = event.text or "(no words)"
        self._add_reply_audio(event.turn)

    def _on_error(self, event) -> None:
        if event.turn in self._messages:
            self._messages[event.turn][1]["content"] = f"⚠️ {event.text}"
            self._player(event.turn).put(None)

    def _player(self, turn: int) -> Queue:
        return self._players.get(self._turn_reply.get(turn, -1), Queue())

    def _add_reply_audio(self, turn: int, keep: int | None = None) -> None:
        pieces = self._audio.pop(turn, [])
        audio = np.concatenate(pieces)[:keep] if pieces else np.zeros(0, np.float32)
        if audio.size:
            self.history.append(logic.audio_message("assistant", self.files.save(audio, self._rate)))

    # ------------------------------------------------------------------------------------------------ output
    def play(self, reply_id: int) -> Iterator[bytes]:
        """The audio of reply `reply_id` as WAV chunks (what is ready, at once), until it is done or interrupted."""
        queue = self._players.get(reply_id)
        if queue is None:
            return
        heard_from = time.monotonic()
        ended = False
        while not ended and time.monotonic() - heard_from < IDLE_LIMIT_S:
            try:
                items = [queue.get(timeout=POLL_S)]
            except Empty:
                self.pump()
                continue
            while not queue.empty():
                items.append(queue.get_nowait())
            if None in items:
                ended, items = True, items[: items.index(None)]
            if items:
                yield logic.wav_bytes(np.concatenate([audio for audio, _ in items]), items[0][1])
                heard_from = time.monotonic()
        self._players.pop(reply_id, None)

    def stop(self) -> None:
        """The microphone was stopped: the reply in progress stops too."""
        if self.session is not None:
            self._route(self.session.interrupt())

    def close(self) -> None:
        """The tab has gone: stops and joins the session's threads, ends the reply players, forgets the conversation
        and deletes its audio files (a reconnecting tab starts afresh)."""
        session, self.session = self.session, None
        if session is not None:
            session.close()
        with self._lock:
            for queue in self._players.values():
                queue.put(None)
            self.history = []
            self._messages.clear()
            self._audio.clear()
            self._turn_reply.clear()
        self.files.close()


def _is_file_in(message: dict, paths: set[str]) -> bool:
    content = message["content"]
    return isinstance(content, dict) and content.get("path") in paths


def build_tab(engine, tabs, mode, voice, persona, free_prompt) -> None:
    """The "Hands-free" tab (call inside `gr.Tabs()`); `tabs`: the app's `memory.TabMemory`; the reply settings are
    the Voice chat tab's components."""
    settings = engine.settings
    with gr.Tab("Hands-free", id="hands_free") as tab:
        state = gr.State(HandsFree(settings.audio_turns), delete_callback=HandsFree.close)
        gr.Markdown(
            "Talk naturally: your turn ends when you pause, the reply starts at once, and talking over it "
            "interrupts it (over speakers, talk clearly: the reply's own voice is ignored). Voice, reply mode and "
            "persona are those of the *Voice chat* tab. Headphones work best."
        )
        status = gr.Markdown(STATES["off"], elem_id="hands_free_status")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Hands-free conversation", height=420, elem_id="hands_free_chat")
                notice = gr.Markdown()
            with gr.Column(scale=2):
                microphone = gr.Audio(
                    sources=["microphone"], streaming=True, label="Microphone", elem_id="hands_free_mic"
                )
                reply_audio = gr.Audio(
                    label="Reply (live)", streaming=True, autoplay=True, interactive=False, elem_id="hands_free_reply"
                )
                reply_id = gr.Number(value=0, visible=False)
                interruptions = gr.Number(value=0, visible=False)

        def on_chunk(chunk, hands_free: HandsFree, mode, voice, persona, free_prompt, request: gr.Request):
            if hands_free.files.folder is None:  # inside the tab's folder, which goes when the tab is closed
                hands_free.files.folder = session_folder(settings.files_dir, request.session_hash) / "hands-free"
            tabs.add(request.session_hash, hands_free)
            try:
                voice = engine_voice(voice, engine, request.session_hash)
            except logic.FriendlyError as error:
                message = str(error)
            else:
                message = hands_free.feed(engine, chunk, mode, voice, persona, free_prompt)
            notice_text = f"⚠️ {message}" if message else ""
            return (
                list(hands_free.history),
                hands_free.state(),
                notice_text,
                hands_free.reply_id,
                hands_free.interruptions,
            )

        def play(reply: float, hands_free: HandsFree):
            with tabs.reply():
                yield from hands_free.play(int(reply))

        def on_stop(hands_free: HandsFree):
            hands_free.stop()
            return list(hands_free.history), STATES["off"]

        microphone.stream(
            on_chunk,
            inputs=[microphone, state, mode, voice, persona, free_prompt],
            outputs=[chatbot, status, notice, reply_id, interruptions],
            stream_every=STREAM_EVERY,
            concurrency_limit=None,  # light: the model runs in the session's threads
            show_progress="hidden",
            api_visibility="private",
        )
        reply_id.change(
            play,
            inputs=[reply_id, state],
            outputs=[reply_audio],
            concurrency_limit=None,
            trigger_mode="multiple",
            show_progress="hidden",
            api_visibility="private",
        )
        interruptions.change(None, js=PAUSE_REPLY, api_visibility="private")
        microphone.stop_recording(on_stop, inputs=[state], outputs=[chatbot, status], api_visibility="private")
        tab.select(None, js=START_MICROPHONE, api_visibility="private")


PAUSE_REPLY = "() => { document.querySelectorAll('#hands_free_reply audio').forEach((audio) => audio.pause()); }"
"""A barge-in also silences the reply already buffered in the browser."""
