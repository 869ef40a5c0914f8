"""Read (and write) the `flow:` / `hift:` hyper-parameters of a CosyVoice3 `cosyvoice3.yaml` without HyperPyYAML.

The file uses HyperPyYAML tags: `!new:<class>` / `!name:<callable>` / `!apply:<callable>` (kept as `Tagged` values,
nothing is imported or called), `!ref <key>` (resolved against the top-level keys, with simple arithmetic such as
`!ref <chunk_size> * <token_mel_ratio>`), `!copy`, `!tuple`. Only the values the decoder needs are mapped to a
[`FunAudioChatToken2WavConfig`]; every size comes from the file.
"""

import ast
import operator
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from .configuration_token2wav import FunAudioChatToken2WavConfig

FLOW_CLASS = "CausalMaskedDiffWithDiT"
HIFT_CLASS = "CausalHiFTGenerator"


@dataclass
class Tagged:
    """A `!new:`, `!name:` or `!apply:` node: the tag kind, its target (a dotted path) and its arguments."""

    kind: str
    target: str
    args: Any


@dataclass
class Reference:
    """A `!ref` / `!copy` expression such as `<chunk_size> * <token_mel_ratio>`."""

    expression: str


class _HyperYamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps HyperPyYAML tags as data."""


# YAML 1.1 wants a dot in floats; HyperPyYAML (ruamel) also reads "1e-06".
_HyperYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_node(loader: yaml.Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    return None if value == "" else value


def _tagged_constructor(kind: str):
    def construct(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Tagged:
        return Tagged(kind, suffix, _construct_node(loader, node))

    return construct


for _kind in ("new", "name", "apply", "module"):
    _HyperYamlLoader.add_multi_constructor(f"!{_kind}:", _tagged_constructor(_kind))
_HyperYamlLoader.add_constructor("!ref", lambda loader, node: Reference(loader.construct_scalar(node)))
_HyperYamlLoader.add_constructor("!copy", lambda loader, node: Reference(loader.construct_scalar(node)))
_HyperYamlLoader.add_constructor("!tuple", lambda loader, node: tuple(_construct_node(loader, node) or ()))

_REF = re.compile(r"<([^<>]+)>")
_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _arithmetic(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_arithmetic(node.operand))
    raise ValueError("not plain arithmetic")


class _Resolver:
    def __init__(self, root: dict):
        self.root = root
        self.active: set[str] = set()

    def lookup(self, path: str) -> Any:
        if path in self.active:
            raise ValueError(f"Circular !ref to <{path}>.")
        self.active.add(path)
        try:
            value: Any = self.root
            for part in re.findall(r"[^.\[\]]+", path):
                if not isinstance(value, dict) or part not in value:
                    raise ValueError(f"!ref <{path}> does not name a value of the yaml file.")
                value = value[part]
            return self.resolve(value)
        finally:
            self.active.discard(path)

    def reference(self, expression: str) -> Any:
        expression = expression.strip()
        whole = _REF.fullmatch(expression)
        if whole:
            return self.lookup(whole.group(1))
        values = {match.group(1): self.lookup(match.group(1)) for match in _REF.finditer(expression)}
        try:
            return _arithmetic(ast.parse(_REF.sub(lambda m: repr(values[m.group(1)]), expression), mode="eval"))
        except (ValueError, SyntaxError):
            return _REF.sub(lambda m: str(values[m.group(1)]), expression)  # string interpolation

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Reference):
            return self.reference(value.expression)
        if isinstance(value, Tagged):
            return Tagged(value.kind, value.target, self.resolve(value.args))
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(item) for item in value)
        return value


def load_hyperpyyaml_subset(text: str, keys: tuple[str, ...] = ("flow", "hift")) -> dict[str, Any]:
    """Parse HyperPyYAML text and return the given top-level entries with every `!ref` resolved."""
    document = yaml.load(text, Loader=_HyperYamlLoader)
    if not isinstance(document, dict):
        raise ValueError("The yaml file does not hold a mapping of hyper-parameters.")
    resolver = _Resolver(document)
    missing = [key for key in keys if key not in document]
    if missing:
        raise ValueError(f"The yaml file has no {', '.join(repr(k) for k in missing)} section.")
    return {key: resolver.resolve(document[key]) for key in keys}


def _component(value: Any, expected: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Tagged) or value.kind != "new":
        raise ValueError(f"{where} must be a `!new:` object, got {value!r}.")
    if value.target.rsplit(".", 1)[-1] != expected:
        raise ValueError(f"{where} is {value.target}, expected a CosyVoice3 {expected}.")
    return dict(value.args or {})


def _plain(value: Any) -> Any:
    """Unwrap `!new:omegaconf.DictConfig {content: ...}` style containers."""
    if isinstance(value, Tagged):
        args = value.args or {}
        return _plain(args.get("content", args)) if isinstance(args, dict) else value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def config_from_cosyvoice_yaml(path: str | PathLike, **overrides: Any) -> FunAudioChatToken2WavConfig:
    """Read `cosyvoice3.yaml` -> [`FunAudioChatToken2WavConfig`] (see `config_from_cosyvoice_yaml_text`)."""
    return config_from_cosyvoice_yaml_text(Path(path).read_text(encoding="utf-8"), **overrides)


def config_from_cosyvoice_yaml_text(text: str, **overrides: Any) -> FunAudioChatToken2WavConfig:
    """HyperPyYAML text -> [`FunAudioChatToken2WavConfig`]. A value the file leaves out takes the reference
    constructor's default; `overrides` win over the file."""
    sections = load_hyperpyyaml_subset(text)
    flow = _component(sections["flow"], FLOW_CLASS, "flow")
    hift = _component(sections["hift"], HIFT_CLASS, "hift")
    look = _component(flow["pre_lookahead_layer"], "PreLookaheadLayer", "flow.pre_lookahead_layer")
    cfm = _component(flow["decoder"], "CausalConditionalCFM", "flow.decoder")
    dit = _component(cfm["estimator"], "DiT", "flow.decoder.estimator")
    f0 = _component(hift["f0_predictor"], "CausalConvRNNF0Predictor", "hift.f0_predictor")
    cfm_params = _plain(cfm.get("cfm_params", {})) or {}
    istft = _plain(hift.get("istft_params", {})) or {}

    output_size = flow.get("output_size", 80)
    input_size = flow.get("input_size", 512)
    values = {
        "vocab_size": flow.get("vocab_size", 4096),
        "token_embedding_dim": input_size,
        "mel_bins": output_size,
        "speaker_embedding_dim": flow.get("spk_embed_dim", 192),
        "token_mel_ratio": flow.get("token_mel_ratio", 2),
        "pre_lookahead_len": flow.get("pre_lookahead_len", look.get("pre_lookahead_len", 3)),
        "pre_lookahead_channels": look["channels"],
        "dit_dim": dit["dim"],
        "dit_depth": dit.get("depth", 8),
        "dit_heads": dit.get("heads", 8),
        "dit_head_dim": dit.get("dim_head", 64),
        "dit_ff_mult": dit.get("ff_mult", 4),
        "dit_mu_dim": dit.get("mu_dim") or dit.get("mel_dim", 80),
        "dit_speaker_dim": dit.get("spk_dim") or cfm.get("spk_emb_dim", 64),
        "static_chunk_size": int(dit.get("static_chunk_size", 50)),
        "t_scheduler": cfm_params.get("t_scheduler", "cosine"),
        "inference_cfg_rate": cfm_params.get("inference_cfg_rate", 0.7),
        "sampling_rate": hift.get("sampling_rate", 22050),
        "hift_base_channels": hift.get("base_channels", 512),
        "nb_harmonics": hift.get("nb_harmonics", 8),
        "nsf_alpha": hift.get("nsf_alpha", 0.1),
        "nsf_sigma": hift.get("nsf_sigma", 0.003),
        "nsf_voiced_threshold": hift.get("nsf_voiced_threshold", 10),
        "upsample_rates": hift.get("upsample_rates", [8, 8]),
        "upsample_kernel_sizes": hift.get("upsample_kernel_sizes", [16, 16]),
        "istft_n_fft": istft.get("n_fft", 16),
        "istft_hop_length": istft.get("hop_len", 4),
        "resblock_kernel_sizes": hift.get("resblock_kernel_sizes", [3, 7, 11]),
        "resblock_dilation_sizes": hift.get("resblock_dilation_sizes", [[1, 3, 5]] * 3),
        "source_resblock_kernel_sizes": hift.get("source_resblock_kernel_sizes", [7, 11]),
        "source_resblock_dilation_sizes": hift.get("source_resblock_dilation_sizes", [[1, 3, 5]] * 2),
        "lrelu_slope": hift.get("lrelu_slope", 0.1),
        "audio_limit": hift.get("audio_limit", 0.99),
        "conv_pre_look_right": hift.get("conv_pre_look_right", 4),
        "f0_cond_channels": f0.get("cond_channels", 512),
    }
    checks = {
        "flow.pre_lookahead_layer.in_channels": (look.get("in_channels", input_size), input_size),
        "flow.decoder.estimator.mel_dim": (dit.get("mel_dim", 80), output_size),
        "flow.decoder.estimator.mu_dim": (values["dit_mu_dim"], input_size),
        "hift.in_channels": (hift.get("in_channels", 80), output_size),
        "hift.f0_predictor.in_channels": (f0.get("in_channels", 80), output_size),
        "hift.f0_predictor.num_class": (f0.get("num_class", 1), 1),
    }
    for name, (found, expected) in checks.items():
        if found != expected:
            raise ValueError(f"{name} is {found}, but this decoder needs {expected}.")
    if values["sampling_rate"] == 22050:
        raise ValueError("hift.sampling_rate 22050 selects the non-causal CosyVoice-1 sine source; not supported.")
    values.update(overrides)
    return FunAudioChatToken2WavConfig(**values)


_YAML_TEMPLATE = """\
# CosyVoice3 hyper-parameters (HyperPyYAML layout; written by transformers-fac, flow/hift sections only)
sample_rate: {sampling_rate}
spk_embed_dim: {speaker_embedding_dim}
token_frame_rate: 25
token_mel_ratio: {token_mel_ratio}
chunk_size: {chunk_codes}
num_decoding_left_chunks: -1

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: {token_embedding_dim}
    output_size: {mel_bins}
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {vocab_size}
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: {pre_lookahead_len}
    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: {token_embedding_dim}
        channels: {pre_lookahead_channels}
        pre_lookahead_len: {pre_lookahead_len}
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: {cfm_in_channels}
        n_spks: 1
        spk_emb_dim: {dit_speaker_dim}
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: '{t_scheduler}'
                training_cfg_rate: 0.2
                inference_cfg_rate: {inference_cfg_rate}
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {dit_dim}
            depth: {dit_depth}
            heads: {dit_heads}
            dim_head: {dit_head_dim}
            ff_mult: {dit_ff_mult}
            mel_dim: {mel_bins}
            mu_dim: {dit_mu_dim}
            spk_dim: {dit_speaker_dim}
            out_channels: {mel_bins}
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.CausalHiFTGenerator
    in_channels: {mel_bins}
    base_channels: {hift_base_channels}
    nb_harmonics: {nb_harmonics}
    sampling_rate: !ref <sample_rate>
    nsf_alpha: {nsf_alpha}
    nsf_sigma: {nsf_sigma}
    nsf_voiced_threshold: {nsf_voiced_threshold}
    upsample_rates: {upsample_rates}
    upsample_kernel_sizes: {upsample_kernel_sizes}
    istft_params:
        n_fft: {istft_n_fft}
        hop_len: {istft_hop_length}
    resblock_kernel_sizes: {resblock_kernel_sizes}
    resblock_dilation_sizes: {resblock_dilation_sizes}
    source_resblock_kernel_sizes: {source_resblock_kernel_sizes}
    source_resblock_dilation_sizes: {source_resblock_dilation_sizes}
    lrelu_slope: {lrelu_slope}
    audio_limit: {audio_limit}
    conv_pre_look_right: {conv_pre_look_right}
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.CausalConvRNNF0Predictor
        num_class: 1
        in_channels: {mel_bins}
        cond_channels: {f0_cond_channels}
"""


def cosyvoice_yaml_from_config(config: FunAudioChatToken2WavConfig) -> str:
    """The `cosyvoice3.yaml` text (flow and hift sections in the release layout) describing `config`."""
    if config.static_chunk_size % config.token_mel_ratio != 0:
        raise ValueError("static_chunk_size must be a multiple of token_mel_ratio to be written as chunk_size.")
    fields = config.to_dict()
    fields.update(
        chunk_codes=config.static_chunk_size // config.token_mel_ratio,
        cfm_in_channels=3 * config.mel_bins,
    )
    return _YAML_TEMPLATE.format(**fields)
