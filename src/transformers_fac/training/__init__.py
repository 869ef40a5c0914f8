"""LoRA fine-tuning helpers: data preparation, speech codes, the collator, LoRA configs, the Trainer, metrics.

Needs the `train` extra (`pip install "transformers-fac[train]"`); tokenizing assistant audio also needs
`s3tokenizer` (see `transformers_fac.speech_tokenizer`).
"""

from ..speech_tokenizer import (
    CODEBOOK_SIZE,
    DEFAULT_SPEECH_TOKENIZER,
    SpeechCodeTokenizer,
    import_s3tokenizer,
    split_windows,
)
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
from .evaluation import evaluate_model, generate_replies
from .lora import TARGETS, adapted_modules, apply_lora, lora_config, lora_target_modules, merge_lora
from .metrics import (
    error_rates,
    normalize_text,
    report_table,
    speech_code_hits,
    speech_text_consistency,
    teacher_forced_metrics,
)
from .trainer import FunAudioChatTrainer, loss_history

__all__ = [
    "CODEBOOK_SIZE",
    "DEFAULT_SPEECH_TOKENIZER",
    "DEFAULT_SYSTEM",
    "FunAudioChatDataCollator",
    "FunAudioChatTrainer",
    "PREPARED_COLUMNS",
    "SkippedRow",
    "SpeechCodeTokenizer",
    "TARGETS",
    "TASKS",
    "adapted_modules",
    "apply_lora",
    "error_rates",
    "evaluate_model",
    "format_tool_calls",
    "generate_replies",
    "import_s3tokenizer",
    "lora_config",
    "lora_target_modules",
    "loss_history",
    "merge_lora",
    "normalize_text",
    "prepare_dataset",
    "render_chatml",
    "report_table",
    "speech_code_hits",
    "speech_text_consistency",
    "split_windows",
    "teacher_forced_metrics",
]
