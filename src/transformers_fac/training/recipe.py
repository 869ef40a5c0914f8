"""YAML fine-tuning recipes: load a dataset, prepare it, add LoRA and train with `FunAudioChatTrainer`.

A recipe (see `finetune/recipes/*.yaml`) has five sections (and an optional sixth, `voice`):

```yaml
model:            # from_pretrained arguments
  name_or_path: FunAudioLLM/Fun-Audio-Chat-8B
  dtype: bfloat16
  attn_implementation: sdpa
  quantize: null  # QLoRA: nf4 (or int8, ...) loads the backbone quantized (`transformers_fac.quantization`)
data:
  load: {path: my-org/my-voice-data, split: train}   # datasets.load_dataset(**load); or load_from_disk: <dir>
  prepare: {task: s2s, user_audio_column: question, reply_column: answer, assistant_audio_column: answer_audio}
  max_length: 2048   # longer examples are dropped (audio cannot be truncated)
  eval_size: 0.01    # held-out fraction (or a row count); 0 = no evaluation set
  max_rows: null     # use only the first rows (quick tries)
speech_tokenizer: {name_or_path: speech_tokenizer_v3_25hz, device: cuda}   # SpeechCodeTokenizer arguments
lora: {target: llm, r: 16, alpha: 32, dropout: 0.05}                      # lora_config arguments
training: {output_dir: runs/s2s-lora, learning_rate: 1.0e-4, bf16: true, ...}  # TrainingArguments
resume_from_checkpoint: null   # true (latest in output_dir) or a checkpoint folder
voice: {name: my voice, audio_column: answer_audio}   # optional: see `save_recipe_voice`
```

Multi-GPU runs use the existing engines: `accelerate launch --config_file finetune/configs/accelerate_*.yaml
finetune/train_lora.py --config ...`, or `training: {deepspeed: finetune/configs/ds_zero2.json}`.
"""

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

TRAINING_DEFAULTS = {
    "remove_unused_columns": False,  # the collator reads the raw columns (audio, messages, codes)
    "label_names": ["labels"],
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "report_to": "none",
}


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Read a recipe YAML file and apply `section.key=value` overrides (values parsed as YAML).

    Example:
        >>> recipe = load_recipe("finetune/recipes/s2s_lora.yaml", ["training.max_steps=10", "lora.r=8"])
        >>> recipe["training"]["max_steps"], recipe["lora"]["r"]
        (10, 8)
    """
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    for override in overrides or []:
        key, separator, value = override.partition("=")
        if not separator:
            raise ValueError(f"Override {override!r} is not of the form section.key=value.")
        node = recipe
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return recipe


def load_source_dataset(data: dict):
    """The raw dataset of a recipe's `data` section (`load_from_disk` or `datasets.load_dataset(**load)`)."""
    import datasets

    if data.get("load_from_disk"):
        dataset = datasets.load_from_disk(data["load_from_disk"])
    else:
        dataset = datasets.load_dataset(**data["load"])
    if isinstance(dataset, datasets.DatasetDict):
        split = data.get("split", "train")
        dataset = dataset[split]
    if data.get("max_rows"):
        dataset = dataset.select(range(min(int(data["max_rows"]), len(dataset))))
    return dataset


def prepare_recipe_data(recipe: dict, processor):
    """Prepared `(train, eval or None)` datasets of a recipe (speech codes computed and cached by `datasets`)."""
    from ..speech_tokenizer import SpeechCodeTokenizer
    from .data import prepare_dataset

    data = recipe["data"]
    prepare = dict(data.get("prepare") or {})
    if prepare.get("task", "s2s") == "s2s" and not prepare.get("codes_column"):
        prepare["speech_tokenizer"] = SpeechCodeTokenizer(**(recipe.get("speech_tokenizer") or {}))
    dataset = prepare_dataset(load_source_dataset(data), processor=processor, **prepare)
    max_length = data.get("max_length")
    if max_length:
        kept = dataset.filter(lambda length: length <= max_length, input_columns="length", desc="Length filter")
        if len(kept) < len(dataset):
            logger.warning("Dropped %d examples longer than %d tokens.", len(dataset) - len(kept), max_length)
        dataset = kept
    eval_size = data.get("eval_size") or 0
    if not eval_size:
        return dataset, None
    split = dataset.train_test_split(test_size=eval_size, seed=data.get("seed", 42))
    return split["train"], split["test"]


@dataclass
class TrainingRun:
    """What `train_from_recipe` produced."""

    trainer: Any
    model: Any
    processor: Any
    train_dataset: Any
    eval_dataset: Any
    adapter_dir: str


def build_training_arguments(recipe: dict):
    """`TrainingArguments` of a recipe's `training` section (plus `TRAINING_DEFAULTS`). `gradient_checkpointing*`
    become `activation_checkpointing*` on transformers versions that renamed them."""
    import dataclasses

    from transformers import TrainingArguments

    arguments = {**TRAINING_DEFAULTS, **(recipe.get("training") or {})}
    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    if "activation_checkpointing" in fields:
        for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
            new = old.replace("gradient", "activation")
            if old in arguments:
                arguments.setdefault(new, arguments.pop(old))
    return TrainingArguments(**arguments)


def train_from_recipe(recipe: dict, callbacks: list | None = None) -> TrainingRun:
    """Run a recipe end to end: data → LoRA model → `FunAudioChatTrainer.train` → adapter (+ processor) saved in
    `<output_dir>/adapter`. Returns the [`TrainingRun`]."""
    from transformers import AutoModelForMultimodalLM, AutoProcessor, set_seed

    from ..quantization import quantization_config
    from .collator import FunAudioChatDataCollator
    from .lora import apply_lora
    from .trainer import FunAudioChatTrainer

    recipe = copy.deepcopy(recipe)
    # TrainingArguments first: under DeepSpeed ZeRO-3 it must exist before the model is built.
    arguments = build_training_arguments(recipe)
    model_section = dict(recipe["model"])
    name_or_path = model_section.pop("name_or_path")
    quantize = model_section.pop("quantize", None)
    if quantize:
        model_section["quantization_config"] = quantization_config(quantize, arguments.device)
    processor = AutoProcessor.from_pretrained(name_or_path)
    with arguments.main_process_first(desc="dataset preparation"):
        train_dataset, eval_dataset = prepare_recipe_data(recipe, processor)
    model = AutoModelForMultimodalLM.from_pretrained(name_or_path, **model_section)
    set_seed(arguments.seed)  # the LoRA initialisation draws random numbers
    model = apply_lora(model, **(recipe.get("lora") or {}))
    if arguments.process_index == 0:
        model.print_trainable_parameters()
    data = recipe["data"]
    trainer = FunAudioChatTrainer(
        model=model,
        args=arguments,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=FunAudioChatDataCollator(processor, max_length=data.get("max_length")),
        processing_class=processor,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=recipe.get("resume_from_checkpoint"))
    adapter_dir = os.path.join(arguments.output_dir, "adapter")
    trainer.save_model(adapter_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(adapter_dir)
        save_recipe_voice(recipe, adapter_dir, trainer.model)
    return TrainingRun(trainer, trainer.model, processor, train_dataset, eval_dataset, adapter_dir)


def save_recipe_voice(recipe: dict, adapter_dir: str | os.PathLike, model) -> Path | None:
    """The recipe's optional `voice` section: one voice built from the speaker's clips in the recipe's data
    (`transformers_fac.voice.voice_from_dataset`: mean speaker vector, best clip as prompt), saved in
    `<adapter_dir>/voice`, where loading the adapter (`from_pretrained`, `pipeline(model=adapter_dir)`, the demo) picks
    it up as the default voice. Keys: `audio_column` (default: `data.prepare.assistant_audio_column`), `name`,
    `min_seconds`, `max_seconds`, `max_clips`. Cloning uses `model`'s speech decoder (its CAM++ and speech tokenizer
    files). Returns the voice directory, or None without a `voice` section."""
    from ..token2wav_loading import VOICE_DIR
    from ..voice import voice_from_dataset

    section = dict(recipe.get("voice") or {})
    if not section:
        return None
    column = section.pop("audio_column", None) or (recipe["data"].get("prepare") or {}).get("assistant_audio_column")
    if not column:
        raise ValueError("The voice section needs an audio_column (or data.prepare.assistant_audio_column).")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "token2wav", None)
    if decoder is None:
        raise ValueError("The voice section needs a model with a speech decoder (token2wav) to clone with.")
    voice = voice_from_dataset(load_source_dataset(recipe["data"]), decoder, audio_column=column, **section)
    path = voice.save(Path(adapter_dir) / VOICE_DIR)
    logger.info("Saved %s to %s (the adapter's default voice)", voice, path)
    return path


__all__ = [
    "TrainingRun",
    "build_training_arguments",
    "load_recipe",
    "load_source_dataset",
    "prepare_recipe_data",
    "save_recipe_voice",
    "train_from_recipe",
]
