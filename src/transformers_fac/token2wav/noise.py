"""The decoder's fixed noise (model state, but not weights: never saved, regenerated on demand).

- Flow noise: `randn(1, mel_bins, flow_noise_frames)` drawn by a CPU generator seeded with `seed`, exactly the
  reference's `rand_noise` (seed 0); mel frame k always starts from column k (wrapping after 300 s).
- Source noise: the vocoder's uniform [0, 1) noise, one value per output sample and harmonic. The reference draws a
  7.2 M x 9 buffer whose values depend on its construction order; here it is generated lazily in blocks of one second,
  each block from its own seeded generator, so any slice is cheap and deterministic.

`override` substitutes given prefixes (used to match golden data recorded with the reference's own buffers).
"""

import torch

SOURCE_BLOCK_SAMPLES = 24000


class FixedNoise:
    """Deterministic flow and source noise with optional overriding prefixes."""

    def __init__(self, mel_bins: int, flow_frames: int, harmonics: int, seed: int = 0):
        self.mel_bins = mel_bins
        self.flow_frames = flow_frames
        self.harmonics = harmonics
        self.seed = seed
        self._flow: torch.Tensor | None = None
        self._flow_override: torch.Tensor | None = None
        self._source_override: torch.Tensor | None = None

    def override(self, flow_noise: torch.Tensor | None = None, source_noise: torch.Tensor | None = None) -> None:
        """Use `flow_noise` [1, mel_bins, K] for flow frames < K and `source_noise` [1, L, harmonics] for samples < L."""
        if flow_noise is not None:
            if flow_noise.dim() != 3 or flow_noise.shape[:2] != (1, self.mel_bins):
                raise ValueError(f"flow_noise must be [1, {self.mel_bins}, K], got {tuple(flow_noise.shape)}.")
            if flow_noise.shape[-1] > self.flow_frames:
                raise ValueError(f"flow_noise covers at most {self.flow_frames} frames, got {flow_noise.shape[-1]}.")
            self._flow_override = flow_noise.detach().float().cpu().clone()
        if source_noise is not None:
            if source_noise.dim() != 3 or source_noise.shape[0] != 1 or source_noise.shape[-1] != self.harmonics:
                raise ValueError(f"source_noise must be [1, L, {self.harmonics}], got {tuple(source_noise.shape)}.")
            self._source_override = source_noise.detach().float().cpu().clone()

    def reset(self) -> None:
        """Forget the overrides."""
        self._flow_override = None
        self._source_override = None

    def _flow_table(self) -> torch.Tensor:
        if self._flow is None:
            generator = torch.Generator().manual_seed(self.seed)
            self._flow = torch.randn(1, self.mel_bins, self.flow_frames, generator=generator)
        table = self._flow
        if self._flow_override is not None:
            table = table.clone()
            table[..., : self._flow_override.shape[-1]] = self._flow_override
        return table

    def flow(self, start: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Noise for mel frames [start, start + length) -> [1, mel_bins, length] float32."""
        table = self._flow_table()
        index = torch.arange(start, start + length) % self.flow_frames
        return table[..., index].to(device)

    def _source_block(self, block: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + block + 1)
        return torch.rand(SOURCE_BLOCK_SAMPLES, self.harmonics, generator=generator)

    def source(self, start: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Uniform noise for output samples [start, start + length) -> [1, length, harmonics] float32."""
        if length <= 0:
            return torch.zeros(1, 0, self.harmonics, device=device)
        first, last = start // SOURCE_BLOCK_SAMPLES, (start + length - 1) // SOURCE_BLOCK_SAMPLES
        blocks = torch.cat([self._source_block(b) for b in range(first, last + 1)])
        offset = start - first * SOURCE_BLOCK_SAMPLES
        noise = blocks[offset : offset + length]
        if self._source_override is not None and start < self._source_override.shape[1]:
            given = self._source_override[0, start : start + length]
            noise = noise.clone()
            noise[: given.shape[0]] = given
        return noise[None].to(device)
