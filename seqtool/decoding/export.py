"""A translation model's search contract (encode / start / step, seqtool/models/base.py) as two graphs
of plain tensors, for runtimes that know nothing of seqtool's state classes, and back.

    encoder graph   (src, src_mask)            -> (*encoder rows, *start state)
    step graph      (prev, *state, *encoder)   -> (log_probs, attn, *next state)

A state (a Rows dataclass, possibly nesting tuples and None) travels as its tensors in field order;
a template taken from one run of the model rebuilds it inside the graph. Every one of those tensors is
batch-first, so on the runtime side one flat Rows of them reorders as the model's own state would, and
seqtool's search decodes through the exported graphs unchanged (ExportedSeq2Seq): the exported model
translates as `seqtool translate` does, by construction. ONNX goes through torch's TorchScript-based
exporter (the dynamo exporter needs onnxscript, and both take the same graphs); TorchScript is traced.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seqtool.models.base import Rows, Seq2SeqModel, StepOut

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def flatten(value) -> list[torch.Tensor]:
    """The tensors inside a state, depth first in field order (None leaves nothing)."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    return [t for v in value for t in flatten(v)]


def unflatten(template, tensors: Iterator[torch.Tensor]):
    """`template`'s structure with its tensors taken, in flatten's order, from `tensors`."""
    if template is None:
        return None
    if isinstance(template, torch.Tensor):
        return next(tensors)
    if dataclasses.is_dataclass(template):
        return dataclasses.replace(template, **{f.name: unflatten(getattr(template, f.name), tensors)
                                                for f in dataclasses.fields(template)})
    return type(template)(unflatten(v, tensors) for v in template)


class EncoderGraph(nn.Module):
    def __init__(self, model: Seq2SeqModel):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.model.encode(src, src_mask)
        return (*flatten(enc), *flatten(self.model.start(enc)))


class StepGraph(nn.Module):
    def __init__(self, model: Seq2SeqModel, enc: Rows, state: Rows):
        super().__init__()
        self.model, self.enc, self.state = model, enc, state
        self.n_state = len(flatten(state))

    def forward(self, prev: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = unflatten(self.state, iter(flat[: self.n_state]))
        enc = unflatten(self.enc, iter(flat[self.n_state :]))
        out = self.model.step(prev, state, enc)
        return (out.log_probs, out.attn, *flatten(out.state))


@dataclass
class Signature:
    """How many tensors the encoder rows and the decoder state hold."""

    n_enc: int
    n_state: int

    def encoder_io(self) -> tuple[list[str], list[str]]:
        return ["src", "src_mask"], [f"enc{i}" for i in range(self.n_enc)] + [f"state{i}" for i in range(self.n_state)]

    def step_io(self) -> tuple[list[str], list[str]]:
        inputs = ["prev"] + [f"state{i}" for i in range(self.n_state)] + [f"enc{i}" for i in range(self.n_enc)]
        return inputs, ["log_probs", "attn"] + [f"next{i}" for i in range(self.n_state)]


def _example(model: Seq2SeqModel, width: int = 5) -> tuple[torch.Tensor, torch.Tensor, Rows, Rows]:
    """A padded batch of two (the second row shorter, so masking is part of the graph)."""
    src = torch.full((2, width), 5)
    src[:, -1], src[1, 2] = 3, 3
    src[1, 3:] = 0
    enc = model.encode(src, src != 0)
    return src, src != 0, enc, model.start(enc)


def _dynamic_axes(model: Seq2SeqModel, sig: Signature) -> dict[str, dict[int, str]]:
    """Dim 0 of everything is the batch; a dim that follows the source length (found by encoding a
    longer example) is `src_len`."""
    (_, _, enc, state), (_, _, longer, longer_state) = _example(model), _example(model, 7)
    axes: dict[str, dict[int, str]] = {}
    names = ["src", "src_mask", "prev", "log_probs", "attn"] + [f"enc{i}" for i in range(sig.n_enc)] \
        + [f"state{i}" for i in range(sig.n_state)] + [f"next{i}" for i in range(sig.n_state)]
    shapes = {"src": ((2, 5), (2, 7)), "src_mask": ((2, 5), (2, 7)), "attn": ((2, 5), (2, 7))}
    pairs = list(zip(flatten(enc) + flatten(state) * 2, flatten(longer) + flatten(longer_state) * 2))
    shapes.update({name: (a.shape, b.shape) for name, (a, b) in zip(names[5:], pairs)})
    for name in names:
        short, long = shapes.get(name, ((2,), (2,)))
        axes[name] = {0: "batch", **{d: "src_len" for d in range(1, len(short)) if short[d] != long[d]}}
    # a state that grows with each step (a Transformer's cached keys and values) has a dynamic step dim
    stepped = flatten(model.step(torch.tensor([5, 6]), state, enc).state)
    for i, (before, after) in enumerate(zip(flatten(state), stepped)):
        for d in range(1, before.dim()):
            if before.size(d) != after.size(d):
                axes[f"state{i}"][d] = axes[f"next{i}"][d] = "steps"
    return axes


def export_graphs(model: Seq2SeqModel, fmt: str, directory: Path) -> tuple[Signature, dict[str, str]]:
    """Write the encoder and step graphs of a CPU model in eval mode into `directory` as `fmt`."""
    src, mask, enc, state = _example(model)
    prev = torch.tensor([5, 6])
    sig = Signature(len(flatten(enc)), len(flatten(state)))
    if model.step(prev, state, enc).attn is None:
        raise ValueError("exporting needs a model with attention")
    encoder, step = EncoderGraph(model), StepGraph(model, enc, state)
    step_args = (prev, *flatten(state), *flatten(enc))
    files = {"encoder": f"encoder{FORMATS[fmt]}", "step": f"step{FORMATS[fmt]}"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants: checked by tests
        if fmt == "torchscript":
            torch.jit.trace(encoder, (src, mask), check_trace=False).save(str(directory / files["encoder"]))
            torch.jit.trace(step, step_args, check_trace=False).save(str(directory / files["step"]))
            return sig, files
        axes = _dynamic_axes(model, sig)
        for graph, args, (inputs, outputs), name in ((encoder, (src, mask), sig.encoder_io(), "encoder"),
                                                     (step, step_args, sig.step_io(), "step")):
            torch.onnx.export(graph, args, str(directory / files[name]), input_names=inputs, output_names=outputs,
                              dynamic_axes={n: axes[n] for n in inputs + outputs}, dynamo=False, opset_version=17)
    return sig, files


@dataclass
class FlatEncoded(Rows):
    tensors: tuple  # the encoder graph's rows
    start: tuple  # the decoder state before the first step


@dataclass
class FlatState(Rows):
    tensors: tuple


Runner = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


class ExportedSeq2Seq(Seq2SeqModel):
    """The two graphs behind the Seq2SeqModel contract, so seqtool's search decodes through a runtime:
    `encoder` and `step` take and return the graphs' tensors in order."""

    def __init__(self, encoder: Runner, step: Runner, sig: Signature):
        super().__init__()
        self.run_encoder, self.run_step, self.sig = encoder, step, sig

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> FlatEncoded:
        flat = self.run_encoder([src, src_mask])
        return FlatEncoded(tuple(flat[: self.sig.n_enc]), tuple(flat[self.sig.n_enc :]))

    def start(self, enc: FlatEncoded) -> FlatState:
        return FlatState(enc.start)

    def step(self, prev: torch.Tensor, state: FlatState, enc: FlatEncoded) -> StepOut:
        log_probs, attn, *state = self.run_step([prev, *state.tensors, *enc.tensors])
        return StepOut(log_probs, attn, FlatState(tuple(state)))


def load_graphs(directory: Path, fmt: str, files: dict[str, str], sig: Signature) -> ExportedSeq2Seq:
    """The exported graphs of `directory` on CPU: onnxruntime sessions or TorchScript modules."""
    if fmt == "torchscript":
        def scripted(name: str) -> Runner:
            module = torch.jit.load(str(directory / files[name]), map_location="cpu")
            return lambda args: list(module(*args))
        return ExportedSeq2Seq(scripted("encoder"), scripted("step"), sig)
    import onnxruntime

    def session(name: str, inputs: list[str]) -> Runner:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
        ort = onnxruntime.InferenceSession(str(directory / files[name]), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in ort.get_inputs()}  # the exporter drops inputs the graph never reads
        return lambda args: [torch.from_numpy(out) for out in ort.run(
            None, {n: a.numpy() for n, a in zip(inputs, args) if n in wanted})]
    return ExportedSeq2Seq(session("encoder", sig.encoder_io()[0]), session("step", sig.step_io()[0]), sig)
