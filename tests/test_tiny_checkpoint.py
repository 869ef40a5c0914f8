import filecmp
import subprocess
import sys
from pathlib import Path

from transformers import AutoConfig, AutoModelForMultimodalLM, AutoProcessor, AutoTokenizer

from transformers_fac import FunAudioChatConfig, FunAudioChatProcessor

REPO = Path(__file__).resolve().parents[1]
EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "speech_tokenizer/tokenizer.json",
    "speech_tokenizer/tokenizer_config.json",
    "token2wav/cosyvoice3.yaml",
    "token2wav/flow.pt",
    "token2wav/hift.pt",
    "token2wav/spk2info.pt",
    "token2wav/campplus.onnx",
    "token2wav/speech_tokenizer_v3.safetensors",
}


def files(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


def test_builder_is_deterministic_and_uses_the_hub_layouts(tiny_e2e_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "hub_configs" / "make_tiny.py"), str(tmp_path / "again")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert files(tiny_e2e_dir) == files(tmp_path / "again") >= EXPECTED_FILES
    for name in files(tiny_e2e_dir):
        assert filecmp.cmp(tiny_e2e_dir / name, tmp_path / "again" / name, shallow=False), name


def test_tiny_checkpoint_loads_with_the_auto_classes(tiny_e2e_dir, tiny_e2e_model):
    assert isinstance(AutoConfig.from_pretrained(tiny_e2e_dir), FunAudioChatConfig)
    processor = AutoProcessor.from_pretrained(tiny_e2e_dir)
    assert isinstance(processor, FunAudioChatProcessor)
    speech = AutoTokenizer.from_pretrained(tiny_e2e_dir, subfolder="speech_tokenizer")
    assert speech("<|audio_bos|>[AU0042]<|audio_pad|>")["input_ids"] == [6561, 42, 6563]
    text_ids = processor.tokenizer("<|AUDIO|><|audio_bos|><|sil|>")["input_ids"]
    config = tiny_e2e_model.config
    assert text_ids == [config.audio_token_index, config.text_config.audio_bos_index, config.text_config.sil_index]
    _, info = AutoModelForMultimodalLM.from_pretrained(tiny_e2e_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    decoder = tiny_e2e_model.token2wav
    assert decoder.voice_names == ["中文女", "中文男"]
    assert decoder.speaker_embedding("中文女").shape == decoder.speaker_embedding("中文男").shape == (1, 192)
