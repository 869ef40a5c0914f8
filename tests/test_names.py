"""One name per concept: a reply's voice is `voice` everywhere (`speaker=` survives one release as a deprecated alias
of `generate` and `stream_reply`; the pipeline's is tested in test_end_to_end.py), "vocoder" means only HiFT, and
the reply-mode rules live in `prompts` alone. Read from the sources (AST and text), except the two alias checks."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import AUDIO_FILES
from transformers import AutoProcessor

from transformers_fac import S2M_SYSTEM_PROMPT, FunAudioChatConversation, stream_reply

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "transformers_fac"
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "src" / "transformers_fac_cli").rglob("*.py")])
SOURCES += sorted((ROOT / "spaces_demo").glob("*.py"))
# "speaker" that means something else than a reply's voice: the CAM++ speaker embedding (vector), its similarity
# metric and features, the official speaker file format (`spk2info.pt`), a loudspeaker.
OTHER_SPEAKER = re.compile(
    r"speaker_?(embedding|similarit|vector|features|file)|SPEAKER_(FILE|SAMPLING)|dit_speaker_dim|loudspeaker",
    re.IGNORECASE,
)
# Modules whose own vocabulary is about the speaker embedding or the speaker file, not about voices.
SPEAKER_MODULES = {"token2wav/speakers.py", "token2wav/flow.py", "token2wav/flow_dit.py"}
# The deprecated `fac-chat --speaker` option (`args.speaker`), turned into `--voice` by the usage checks.
DEPRECATED_ALIASES = {("src/transformers_fac_cli/chat_arguments.py", "speaker")}


def identifiers(tree: ast.AST):
    """Every name a module defines or uses: functions, classes, parameters, variables, attributes, keywords."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node.lineno
        elif isinstance(node, ast.arg):
            yield node.arg, node.lineno
        elif isinstance(node, ast.Name):
            yield node.id, node.lineno
        elif isinstance(node, ast.Attribute):
            yield node.attr, node.lineno
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.arg, node.lineno
        elif isinstance(node, ast.alias):
            yield (node.asname or node.name).split(".")[-1], node.lineno


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else path.relative_to(ROOT).as_posix()


def test_no_name_calls_a_voice_a_speaker():
    found = [
        f"{relative(path)}:{line} {name}"
        for path in SOURCES
        if relative(path) not in SPEAKER_MODULES
        for name, line in identifiers(ast.parse(path.read_text()))
        if "speaker" in name.lower()
        and not OTHER_SPEAKER.search(name)
        and (relative(path), name) not in DEPRECATED_ALIASES
    ]
    assert found == []


def test_the_finder_sees_a_speaker_argument():
    tree = ast.parse("def f(speaker=None):\n    return g(speaker=speaker)\n")
    assert sorted({name for name, _ in identifiers(tree) if "speaker" in name}) == ["speaker"]


def test_vocoder_names_only_hift_inside_the_decoder():
    assert not list(PACKAGE.rglob("vocod*.py"))
    found = [
        f"{relative(path)}:{line} {name}"
        for path in SOURCES
        if not relative(path).startswith("token2wav/")
        for name, line in identifiers(ast.parse(path.read_text()))
        if "vocod" in name.lower()
    ]
    assert found == []


def test_the_mode_prompt_rule_and_the_voice_check_are_written_once():
    """Outside `prompts.py` nobody picks S2M vs S2T by mode or writes the "a voice needs a spoken reply" message."""
    choice = re.compile(r"S2M_SYSTEM_PROMPT\s+if\b|S2T_SYSTEM_PROMPT\s+if\b|else\s+S2[MT]_SYSTEM_PROMPT")
    for path in SOURCES:
        if path.name == "prompts.py" and path.parent == PACKAGE:
            continue
        text = path.read_text()
        assert not choice.search(text), relative(path)
        assert "chooses the voice of spoken replies" not in text or path.name == "chat_arguments.py", relative(path)


@pytest.fixture(scope="module")
def inputs(tiny_e2e_dir):
    chat = FunAudioChatConversation(system_prompt=S2M_SYSTEM_PROMPT)
    chat.add_user_audio(AUDIO_FILES["en"])
    return chat.model_inputs(AutoProcessor.from_pretrained(tiny_e2e_dir))


def test_generate_still_takes_speaker_with_a_future_warning(tiny_e2e_model, inputs):
    settings = dict(generation_mode="audio", do_sample=False, max_new_tokens=8, return_dict_in_generate=True)
    new = tiny_e2e_model.generate(**inputs, **settings, voice="中文男")
    with pytest.warns(FutureWarning, match=r"generate: `speaker=` is deprecated .* use `voice=` instead"):
        old = tiny_e2e_model.generate(**inputs, **settings, speaker="中文男")
    assert new.audio[0].numel() > 0 and torch.equal(old.audio[0], new.audio[0])
    assert not torch.equal(tiny_e2e_model.generate(**inputs, **settings).audio[0], new.audio[0])  # 中文女 differs
    with pytest.raises(TypeError, match="give only `voice`"):
        tiny_e2e_model.generate(**inputs, **settings, voice="中文男", speaker="中文女")


def test_stream_reply_still_takes_speaker_with_a_future_warning(tiny_e2e_dir, tiny_e2e_model, inputs):
    processor = AutoProcessor.from_pretrained(tiny_e2e_dir)

    def audio(**options) -> np.ndarray:
        events = stream_reply(tiny_e2e_model, processor, inputs, max_new_tokens=12, do_sample=False, **options)
        return np.concatenate([event.audio for event in events if event.audio is not None])

    new = audio(voice="中文男")
    with pytest.warns(FutureWarning, match=r"stream_reply: `speaker=` is deprecated .* use `voice=` instead"):
        old = audio(speaker="中文男")
    assert new.size > 0 and np.array_equal(old, new)
    with pytest.raises(ValueError, match="`voice` chooses the voice of spoken replies"):
        stream_reply(tiny_e2e_model, processor, inputs, voice="中文男", generation_mode="text")
