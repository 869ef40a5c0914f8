"""`transformers.Trainer` that also logs Fun-Audio-Chat's two losses, `text_loss` and `speech_loss`."""

from transformers import Trainer


class FunAudioChatTrainer(Trainer):
    """A `Trainer` whose logs carry `text_loss` and `speech_loss` next to `loss` (and `eval_text_loss`,
    `eval_speech_loss` next to `eval_loss`): the means over the steps since the previous log, averaged over
    processes. Everything else is the stock `Trainer` (the model returns mean losses and sets
    `accepts_loss_kwargs = False`, so gradient accumulation is scaled by the Trainer)."""

    _PARTS = ("text_loss", "speech_loss")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_sums = {"train": {}, "eval": {}}
        self._loss_counts = {"train": {}, "eval": {}}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        phase = "train" if model.training else "eval"
        sums, counts = self._loss_sums[phase], self._loss_counts[phase]
        for name in self._PARTS:
            value = outputs.get(name) if isinstance(outputs, dict) else getattr(outputs, name, None)
            if value is not None:  # no speech_loss for batches without spoken replies
                sums[name] = sums.get(name, 0.0) + value.detach().float()
                counts[name] = counts.get(name, 0) + 1
        return (loss, outputs) if return_outputs else loss

    def _pop_means(self, phase: str) -> dict[str, float]:
        sums, counts = self._loss_sums[phase], self._loss_counts[phase]
        self._loss_sums[phase], self._loss_counts[phase] = {}, {}
        means = {}
        for name, total in sums.items():
            value = (total / counts[name]).to(self.args.device)
            if self.args.world_size > 1:
                value = self.accelerator.reduce(value, reduction="mean")
            means[name] = round(float(value), 4)
        return means

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if any(key.startswith("eval_") for key in logs):
            logs.update({f"eval_{name}": value for name, value in self._pop_means("eval").items()})
        elif "loss" in logs:
            logs.update(self._pop_means("train"))
        super().log(logs, start_time)


def loss_history(trainer: Trainer, key: str = "loss") -> list[tuple[int, float]]:
    """`(step, value)` of every logged `key` (e.g. `"loss"`, `"text_loss"`, `"speech_loss"`) of a trained trainer."""
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history if key in entry]


__all__ = ["FunAudioChatTrainer", "loss_history"]
