"""Live, hands-free conversations: voice activity, end of turn and barge-in on top of the reply streams.

Needs the `live` extra (`pip install "transformers-fac[live]"`: silero-vad; sounddevice for a microphone), imported
only when a session starts.

Example:

```python
>>> from transformers_fac.live import VoiceSession
>>> with VoiceSession(model, processor, voice="中文女") as session:
...     for event in session.feed(chunk, 48000):
...         print(event.type, round(event.time, 2))
```
"""

from .session import EVENT_TYPES, REPLY_MODES, LiveEvent, VoiceSession
from .turns import TurnDetector, TurnSettings
from .vad import LIVE_EXTRA, AudioWindows, VoiceActivity

__all__ = [
    "EVENT_TYPES",
    "LIVE_EXTRA",
    "REPLY_MODES",
    "AudioWindows",
    "LiveEvent",
    "TurnDetector",
    "TurnSettings",
    "VoiceActivity",
    "VoiceSession",
]
