"""Fine-tuning helpers: data preparation, speech codes, the collator.

Needs the `train` extra (`pip install "transformers-fac[train]"`); tokenizing assistant audio also needs
`s3tokenizer` (see `transformers_fac.training.speech_tokenizer`).
"""

from .collator import FunAudioChatDataCollator
from .data import (
    DEFAULT_SYSTEM,
    PREPARED_COLUMNS,
    TASKS,
    SkippedRow,
    format_tool_calls,
    prepare_dataset,
    render_chatml,
)
from .speech_tokenizer import (
    CODEBOOK_SIZE,
    DEFAULT_SPEECH_TOKENIZER,
    SpeechCodeTokenizer,
    import_s3tokenizer,
    split_windows,
)

__all__ = [
    "CODEBOOK_SIZE",
    "DEFAULT_SPEECH_TOKENIZER",
    "DEFAULT_SYSTEM",
    "FunAudioChatDataCollator",
    "PREPARED_COLUMNS",
    "SkippedRow",
    "SpeechCodeTokenizer",
    "TASKS",
    "format_tool_calls",
    "import_s3tokenizer",
    "prepare_dataset",
    "render_chatml",
    "split_windows",
]
