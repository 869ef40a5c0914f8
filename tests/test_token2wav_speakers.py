"""Speaker files: parsing, the sha256 check, voice selection, and the one-time download (from a local HTTP server),
all with files the tests make; plus the official `new_spk2info.pt` itself when `FAC_OFFICIAL_SPEAKER_FILE` names it."""

import http.server
import threading

import pytest
import torch

from tests.token2wav_testing import TINY_COSYVOICE, make_speaker_file, official_speaker_file, single_thread  # noqa: F401
from transformers_fac.token2wav import DEFAULT_VOICE, FunAudioChatToken2Wav, load_speaker_file, speakers
from transformers_fac.token2wav.speakers import SPEAKER_FILE_SHA256, _sha256


@pytest.fixture(scope="module")
def model():
    return FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)


@pytest.fixture(scope="module")
def codes():
    return torch.randint(0, 6561, (1, 10), generator=torch.Generator().manual_seed(0))


def test_speaker_file_is_parsed_into_embeddings(tmp_path):
    path = make_speaker_file(tmp_path / "voices.pt", names=("a", "b", "c"))
    table = torch.load(path, weights_only=True)
    voices = load_speaker_file(path, check_hash=False)
    assert list(voices) == ["a", "b", "c"]
    for name, embedding in voices.items():
        assert embedding.shape == (192,) and embedding.dtype == torch.float32
        assert torch.equal(embedding, table[name]["embedding"][0])
    table["no voice"] = {"speech_token": torch.zeros(1, 3, dtype=torch.long)}  # entries without an embedding: skipped
    table["not a dict"] = torch.ones(192)
    torch.save(table, path)
    assert list(load_speaker_file(path, check_hash=False)) == ["a", "b", "c"]


def test_bad_speaker_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_speaker_file(tmp_path / "missing.pt", check_hash=False)
    torch.save([torch.ones(192)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a dict"):
        load_speaker_file(tmp_path / "list.pt", check_hash=False)
    torch.save({"me": {"speech_token": torch.zeros(3)}}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="no speaker with an 'embedding'"):
        load_speaker_file(tmp_path / "empty.pt", check_hash=False)


def test_speaker_file_hash_is_checked(tmp_path, monkeypatch):
    path = make_speaker_file(tmp_path / "voices.pt")
    with pytest.raises(ValueError, match="not the official speaker file .sha256 mismatch.; pass check_hash=False"):
        load_speaker_file(path)
    monkeypatch.setattr(speakers, "SPEAKER_FILE_SHA256", _sha256(path))  # as if it were the official file
    assert list(load_speaker_file(path)) == ["中文女", "中文男"]
    path.write_bytes(path.read_bytes() + b"\0")  # one byte more: refused
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_speaker_file(path)


def test_voices_are_selected_by_name(model, codes, tmp_path):
    path = make_speaker_file(tmp_path / "voices.pt", seed=5)
    voices = load_speaker_file(path, check_hash=False)
    assert model.load_voices(path, check_hash=False) == model.voice_names == ["中文女", "中文男"]
    for name in model.voice_names:
        embedding = model.speaker_embedding(name)
        assert embedding.shape == (1, 192) and embedding.dtype == torch.float32
        assert torch.equal(embedding[0], voices[name])
    assert DEFAULT_VOICE == "中文女"
    assert torch.equal(model.speaker_embedding(None), model.speaker_embedding("中文女"))
    female, male = model.decode(codes, voice="中文女"), model.decode(codes, voice="中文男")
    assert female.shape == male.shape == (1, 9600) and not torch.equal(female, male)
    assert torch.equal(female, model.decode(codes, voice=voices["中文女"]))  # a name is its embedding
    with pytest.raises(ValueError, match="Unknown voice '英文女'; valid voices: '中文女', '中文男'"):
        model.decode(codes, voice="英文女")


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving `<tmp>/served`: yields (base URL, served folder, requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, format, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="speaker-file-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served, requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def test_speaker_file_is_downloaded_once_and_hash_checked(tmp_path, monkeypatch, file_server):
    url, served, requested = file_server
    published = make_speaker_file(served / "new_spk2info.pt", seed=3)
    original = published.read_bytes()
    monkeypatch.setattr(speakers, "SPEAKER_FILE_URL", url + "new_spk2info.pt")
    monkeypatch.setattr(speakers, "SPEAKER_FILE_SHA256", _sha256(published))
    monkeypatch.setattr(speakers.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    cached = speakers.cached_speaker_file_path()
    assert cached.parent == tmp_path / "cache" / "transformers_fac"

    decoder = FunAudioChatToken2Wav.from_cosyvoice(TINY_COSYVOICE)
    assert decoder.voice_names == ["中文女", "中文男"]  # the first use downloads the file
    assert requested == ["/new_spk2info.pt"] and cached.read_bytes() == original
    expected = torch.load(published, weights_only=True)["中文男"]["embedding"]
    assert torch.equal(decoder.speaker_embedding("中文男"), expected)
    assert list(load_speaker_file()) == ["中文女", "中文男"] and len(requested) == 1  # then the cached copy

    cached.write_bytes(b"damaged")  # a damaged cached copy is downloaded again
    load_speaker_file()
    assert len(requested) == 2 and cached.read_bytes() == original

    cached.unlink()
    published.write_bytes(b"not the speaker file")  # the server sends other bytes: refused, nothing kept
    with pytest.raises(ValueError, match="has sha256 .*, expected"):
        load_speaker_file()
    published.unlink()  # the server has no such file (404): the error goes up, nothing kept
    with pytest.raises(Exception, match="404"):
        load_speaker_file()
    assert len(requested) == 4 and list(cached.parent.iterdir()) == []


def test_official_speaker_file(model, codes):
    """The real `new_spk2info.pt`: its pinned hash, the two stock voices, distinct 192-d embeddings."""
    path = official_speaker_file()
    assert _sha256(path) == SPEAKER_FILE_SHA256
    voices = load_speaker_file(path)
    assert list(voices) == ["中文女", "中文男"] and DEFAULT_VOICE in voices
    for embedding in voices.values():
        assert embedding.shape == (192,) and embedding.dtype == torch.float32
        assert torch.isfinite(embedding).all() and float(embedding.norm()) > 1
    assert not torch.allclose(voices["中文女"], voices["中文男"])
    assert model.load_voices(path) == list(voices)
    torch.testing.assert_close(model.speaker_embedding()[0], voices["中文女"])
    female, male = model.decode(codes, voice="中文女"), model.decode(codes, voice="中文男")
    assert female.shape == male.shape == (1, 9600) and not torch.equal(female, male)
