"""LoRA fine-tuning of Fun-Audio-Chat from a YAML recipe (`finetune/recipes/*.yaml`).

Usage:
    python finetune/train_lora.py --config finetune/recipes/s2s_lora.yaml [section.key=value ...]
    accelerate launch --config_file finetune/configs/accelerate_multi_gpu.yaml \\
        finetune/train_lora.py --config finetune/recipes/s2s_lora.yaml
    accelerate launch --config_file finetune/configs/accelerate_deepspeed_zero2.yaml \\
        finetune/train_lora.py --config finetune/recipes/s2s_lora.yaml

Overrides use dotted keys, e.g. `training.max_steps=100 lora.target=llm+speech_head resume_from_checkpoint=true`.
Relative paths in the recipe (model, data, DeepSpeed config) that exist under the repository root are resolved
against it. The adapter and the processor are saved to `<training.output_dir>/adapter`.
"""

import argparse
import logging
from pathlib import Path

import transformers_fac  # noqa: F401  (registers the model with the Auto classes)
from transformers_fac.training.recipe import load_recipe, train_from_recipe

REPO = Path(__file__).resolve().parents[1]
PATH_KEYS = (("model", "name_or_path"), ("data", "load_from_disk"), ("training", "deepspeed"))


def resolve_paths(recipe: dict, root: Path = REPO) -> dict:
    """Make the recipe's relative local paths absolute when they exist under `root` but not in the cwd."""
    for section, key in PATH_KEYS:
        value = (recipe.get(section) or {}).get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            if not Path(value).exists() and (root / value).exists():
                recipe[section][key] = str(root / value)
    return recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LoRA fine-tuning of Fun-Audio-Chat from a YAML recipe.")
    parser.add_argument("--config", required=True, help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    recipe = resolve_paths(load_recipe(args.config, args.overrides))
    run = train_from_recipe(recipe)
    print(f"adapter saved to {run.adapter_dir}")


if __name__ == "__main__":
    main()
