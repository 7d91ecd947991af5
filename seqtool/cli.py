"""The seqtool command line. Commands parse, validate and call library code; data goes to stdout,
logs and progress to stderr; a user error is one line on stderr and exit code 2."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from seqtool.errors import SeqtoolError

_CLICK_ERRORS = sys.modules[typer.BadParameter.__module__]  # click's exceptions, or typer's vendored copy


@contextlib.contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    """A mistyped command, option or value as one `seqtool: error:` line (exit code 2) instead of
    click's usage block; asking for nothing still shows the help."""
    try:
        yield
    except getattr(_CLICK_ERRORS, "NoArgsIsHelpError", ()):
        raise
    except _CLICK_ERRORS.UsageError as err:
        where = f" (see {err.ctx.command_path} --help)" if err.ctx else ""
        raise SeqtoolError(" ".join(err.format_message().split()) + where) from None


class _Commands(TyperGroup):
    """Every command, with usage errors in one line, ending quietly with exit code 0 when its reader
    closes stdout (`| head`), as Unix tools do; click would exit 1, which fails `set -o pipefail`."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        try:
            with _usage_errors_in_one_line():
                result = super().invoke(ctx)
            sys.stdout.flush()  # inside the try: a close after the last write fails only here
            return result
        except BrokenPipeError:
            # Python flushes stdout once more at exit; pointing it at /dev/null lets that succeed.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and decode language and translation models from YAML recipes.")

SetOpt = Annotated[list[str], typer.Option("--set", help="override a recipe key: --set train.max_steps=200 "
                                                          "(repeatable)")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="run directory or checkpoint .pt file")]


def _device(value: str | None) -> str | None:
    from seqtool.recipe.schema import Device

    if value is not None and value not in typing.get_args(Device):
        raise SeqtoolError(f"--device {value}: expected one of {', '.join(typing.get_args(Device))}")
    return value


DeviceOpt = Annotated[str | None, typer.Option(callback=_device, help="cpu, cuda or auto (overrides train.device)")]
BeamOpt = Annotated[int | None, typer.Option(help="beam width (1 = greedy)")]
AlphaOpt = Annotated[float | None, typer.Option("--alpha", "--lenpen", help="length penalty exponent")]
LengthPenaltyOpt = Annotated[str | None, typer.Option(help="length penalty form: gnmt, fairseq or none")]
BetaOpt = Annotated[float | None, typer.Option("--beta", "--covpen", help="GNMT coverage penalty")]
PruneOpt = Annotated[float | None, typer.Option(help="GNMT beam pruning margin")]
EarlyStopOpt = Annotated[bool | None, typer.Option("--early-stop/--no-early-stop", help="beam search: a sentence "
                                                   "is done once beam hypotheses have finished (fairseq's rule)")]
NoRepeatOpt = Annotated[int | None, typer.Option("--no-repeat-ngram-size", "--no-repeat-ngram", help="no output "
                                                 "repeats an n-gram of this size (0 = off)")]
TagOpt = Annotated[str | None, typer.Option(help="a model trained on tagged corpora: the output language's tag, "
                                            "e.g. '<2en>' (decode.tag)")]


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(recipe: Path, overrides: list[str], device: str | None):
    from seqtool.commands.recipes import load_recipe

    return load_recipe(recipe, [*overrides, *([f"train.device={device}"] if device else [])])


@app.command()
def prepare(recipe: Path, set_: SetOpt = []) -> None:
    """Train the tokenizer and binarize every split of a recipe's data (a no-op when up to date)."""
    from seqtool.commands.tasks import prepare_task

    prepare_task(_load(recipe, set_, None), log=_err)


@app.command()
def check(recipe: Path, set_: SetOpt = []) -> None:
    """Validate a recipe and print it fully resolved (YAML) on stdout."""
    import yaml

    print(yaml.safe_dump(_load(recipe, set_, None).model_dump(mode="json"), sort_keys=False), end="")


@app.command()
def keys() -> None:
    """Print every recipe key with its type, default and meaning (Markdown)."""
    from seqtool.commands.keys import markdown_reference

    print(markdown_reference(), end="")


@app.command()
def train(recipe: Path, set_: SetOpt = [],
          resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False,
          device: DeviceOpt = None) -> None:
    """Train a recipe (preparing its data first when needed), then report on its test split."""
    from seqtool.commands.train import train_recipe

    result = train_recipe(_load(recipe, set_, device), resume=resume)
    if result:
        print(json.dumps(result))


def _decode_overrides(sets: list[str] = (), **flags) -> dict:
    """A trained run's decode (and eval) keys from `--set`, the named flags over them; its model and
    data keys are what it was trained with."""
    from seqtool.recipe.overrides import apply_overrides, merged, parse_override

    for text in sets:
        path, _ = parse_override(text)
        if path[0] not in ("decode", "eval"):
            raise SeqtoolError(f"--set {'.'.join(path)[:80]}: only decode.* and eval.* keys apply to a trained run")
    raw = apply_overrides({}, list(sets))
    return {**raw, "decode": merged(raw.get("decode", {}), {k: v for k, v in flags.items() if v is not None})}


RunSetOpt = Annotated[list[str], typer.Option("--set", help="override a decode or eval key: --set "
                                                             "decode.precision=fp32 (repeatable)")]


@app.command(name="eval")
def evaluate(checkpoint: CheckpointOpt, split: Annotated[str, typer.Option(help="valid or test")] = "test",
             src: Annotated[Path | None, typer.Option(help="translation: a source file, instead of a split")] = None,
             ref: Annotated[Path | None, typer.Option(help="its reference translations (with --src)")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
             beam: BeamOpt = None, alpha: AlphaOpt = None, length_penalty: LengthPenaltyOpt = None,
             beta: BetaOpt = None, prune_margin: PruneOpt = None, early_stop: EarlyStopOpt = None,
             no_repeat_ngram: NoRepeatOpt = None, tag: TagOpt = None,
             device: DeviceOpt = None, set_: RunSetOpt = []) -> None:
    """Perplexity (language models) or BLEU/chrF (translation) of a trained run on a split, or of a
    translation run on any source and reference file (--src, --ref). A split of several corpora gives
    each corpus's figures (bleu/de-en) and their mean; --split test.de-en gives one corpus's."""
    from seqtool.commands.evaluate import evaluate_files, evaluate_run, format_result

    overrides = _decode_overrides(set_, beam=beam, alpha=alpha, length_penalty=length_penalty, beta=beta,
                                  prune_margin=prune_margin, early_stop=early_stop, no_repeat_ngram=no_repeat_ngram,
                                  tag=tag)
    if (src is None) != (ref is None):
        raise SeqtoolError("--src and --ref go together (a source file and its reference translations)")
    if src is not None:
        result = evaluate_files(checkpoint, src, ref, overrides, device or "auto")
    else:
        result = evaluate_run(checkpoint, split, overrides, device or "auto")
    if as_json:
        print(json.dumps(result))
    else:
        print(format_result(result), end="")


@app.command()
def translate(
    checkpoints: Annotated[list[Path], typer.Option("--checkpoint", "-c", help="run directory or checkpoint .pt "
                                                    "file; repeat for an ensemble")],
    input: Annotated[Path | None, typer.Option("--input", "-i", help="source file (default stdin)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="output file (default stdout)")] = None,
    beam: BeamOpt = None, alpha: AlphaOpt = None, length_penalty: LengthPenaltyOpt = None, beta: BetaOpt = None,
    prune_margin: PruneOpt = None, early_stop: EarlyStopOpt = None, no_repeat_ngram: NoRepeatOpt = None,
    tag: TagOpt = None,
    n_best: Annotated[int | None, typer.Option(help="hypotheses per input: 'i ||| text ||| score' lines")] = None,
    max_len_a: float | None = None, max_len_b: int | None = None,
    batch_tokens: Annotated[int | None, typer.Option(help="source tokens per batch")] = None,
    sample: Annotated[bool | None, typer.Option("--sample/--no-sample", help="sample instead of search")] = None,
    temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
    seed: Annotated[int, typer.Option(min=0, max=2**64 - 1, help="sampling seed")] = 1,
    device: DeviceOpt = None,
    jsonl: Annotated[bool, typer.Option("--jsonl", help='input lines are {"text": ..., "constraints": [...]}: '
                                        "each constraint phrase appears in the output")] = False,
    weights: Annotated[str | None, typer.Option(help="ensemble weights, one per -c, comma-separated")] = None,
    lm: Annotated[Path | None, typer.Option(help="language model run fused into the search (same target "
                                            "vocabulary)")] = None,
    lm_weight: Annotated[float, typer.Option(help="weight of the LM's log-probabilities")] = 0.2,
    alignment: Annotated[bool, typer.Option("--alignment", help="append ' ||| i-j ...' word alignments from "
                                            "attention")] = False,
    attention_plot: Annotated[Path | None, typer.Option(help="write one attention heatmap PNG per line here")] = None,
    attention_layer: Annotated[int | None, typer.Option(help="decoder layer whose attention to use (transformer, "
                                                        "convs2s; -1 the last)")] = None,
    set_: RunSetOpt = [],
) -> None:
    """Translate raw text line by line: one output line per input line (n-best: n lines each)."""
    from seqtool.commands.translate import run_translate

    overrides = _decode_overrides(set_, beam=beam, alpha=alpha, length_penalty=length_penalty, beta=beta,
                                  prune_margin=prune_margin, early_stop=early_stop, n_best=n_best, tag=tag,
                                  no_repeat_ngram=no_repeat_ngram,
                                  max_len_a=max_len_a, max_len_b=max_len_b, batch_tokens=batch_tokens,
                                  strategy=None if sample is None else ("sample" if sample else "beam"),
                                  temperature=temperature, top_k=top_k, top_p=top_p)
    if attention_layer is not None:
        overrides["model"] = {"attention_layer": attention_layer}
    run_translate(checkpoints, input, output, overrides, device=device or "auto", seed=seed, warn=_err, jsonl=jsonl,
                  weights=_numbers("--weights", weights), lm=lm, lm_weight=lm_weight, alignment=alignment,
                  attention_plot=attention_plot)


def _numbers(option: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise SeqtoolError(f"{option} {text}: expected comma-separated numbers") from None


@app.command()
def plot(runs: Annotated[list[Path], typer.Argument(help="run directories")],
         output: Annotated[Path | None, typer.Option("--output", "-o", help="directory for the PNGs")] = None,
         terminal: Annotated[bool, typer.Option(help="print a text chart of the training loss instead")] = False,
         x: Annotated[str, typer.Option("--x", help="steps, or time: the run's training seconds (NAME_time.png)")
                      ] = "steps") -> None:
    """Plot training loss, learning rate and validation metrics against steps or training time, runs
    overlaid (PNG)."""
    from seqtool.commands.plot import plot_runs

    if terminal == (output is not None):
        raise SeqtoolError("give either --output DIR (PNG files) or --terminal (a text chart)")
    for path in plot_runs(runs, None if terminal else output, print_=print, x=x):
        _err(f"wrote {path}")


@app.command()
def export(checkpoint: CheckpointOpt,
           output: Annotated[Path, typer.Option("--output", "-o", help="new directory for the exported model")],
           format: Annotated[str, typer.Option("--format", help="onnx, torchscript, or ctranslate2 (Transformer "
                                                               "only)")] = "onnx") -> None:
    """Export a translation run's encoder and decoder step (ONNX or TorchScript), or a Transformer as a
    CTranslate2 model, with its tokenizer."""
    from seqtool.commands.export import export_run

    manifest = export_run(checkpoint, format, output)
    _err(f"exported {manifest['arch']} as {format} to {output}")


@app.command()
def logprob(
    checkpoint: CheckpointOpt,
    src: Annotated[Path, typer.Option(help="source file")],
    tgt: Annotated[Path, typer.Option(help="target file, line-aligned with --src")],
    word_scores: Annotated[bool, typer.Option("--word-scores", help="add each target token's log-probability")] = False,
    alpha: AlphaOpt = None, length_penalty: LengthPenaltyOpt = None, beta: BetaOpt = None,
    batch_tokens: Annotated[int | None, typer.Option(help="source tokens per batch")] = None,
    device: DeviceOpt = None,
) -> None:
    """Forced decoding: for each source/target pair, the run's log P(target | source), the score search
    would give it (length/coverage penalties) and the target's token count, tab-separated."""
    from seqtool.commands.logprob import run_logprob

    overrides = _decode_overrides(alpha=alpha, length_penalty=length_penalty, beta=beta, batch_tokens=batch_tokens)
    run_logprob(checkpoint, src, tgt, overrides, device=device or "auto", word_scores=word_scores, warn=_err)


@app.command()
def serve(
    checkpoint: CheckpointOpt,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: a free one, printed)")] = 8000,
    micro_batch_tokens: Annotated[int, typer.Option(min=1, help="source tokens a micro-batch gathers")] = 4096,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="how long a micro-batch waits for more")] = 5.0,
    max_queue: Annotated[int, typer.Option(min=1, help="requests waiting at most (then 429)")] = 64,
    max_sentences: Annotated[int, typer.Option(min=1, help="sentences per request at most (then 413)")] = 256,
    max_body: Annotated[int, typer.Option(min=1, help="bytes per request body at most (then 413)")] = 1 << 20,
    access_log: Annotated[bool, typer.Option(help="log every request on stderr")] = True,
    device: DeviceOpt = None,
) -> None:
    """Serve a translation run over HTTP: POST /translate (JSON), GET /health, GET /info."""
    from seqtool.serving.app import Limits
    from seqtool.serving.server import serve_run

    limits = Limits(max_body=max_body, max_sentences=max_sentences, max_queue=max_queue,
                    micro_batch_tokens=micro_batch_tokens, max_wait_ms=max_wait_ms)
    serve_run(checkpoint, host=host, port=port, device=device or "auto", limits=limits, access_log=access_log,
              say=_err)


@app.command()
def quantize(
    checkpoint: CheckpointOpt,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="default RUN/checkpoints/int8.pt")] = None,
    max_drop: Annotated[float, typer.Option(help="refuse (exit 2) when int8 loses more BLEU than this")] = 0.5,
    split: Annotated[str, typer.Option(help="the split measured")] = "valid",
    beam: BeamOpt = None,
) -> None:
    """int8 decoding on a CPU: validation BLEU and speed in fp32 and int8, then the int8 model written
    (decode it with `seqtool translate -c FILE`), unless BLEU drops by more than --max-drop."""
    from seqtool.commands.quantize import quantize_run

    print(json.dumps(quantize_run(checkpoint, output, max_drop, _decode_overrides(beam=beam), split)))


@app.command()
def average(
    files: Annotated[list[Path] | None, typer.Argument(help="checkpoint files to average")] = None,
    run: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="run directory: average its last N")] = None,
    last: Annotated[int, typer.Option(min=1, help="how many of the run's newest step checkpoints")] = 5,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="default RUN/checkpoints/avg_lastN.pt")] = None,
) -> None:
    """Average the weights of checkpoints into a new one (evaluate it with `seqtool eval -c FILE`)."""
    from seqtool.commands.average import average_run

    print(json.dumps(average_run(files or [], run, last, output)))


@app.command()
def score(hypothesis: Path, ref: Annotated[Path, typer.Option("--ref", "-r", help="reference file")],
          metrics: Annotated[str, typer.Option(help="comma-separated: bleu, chrf, ter")] = "bleu,chrf",
          tokenize: Annotated[str, typer.Option(help="BLEU tokenizer (sacrebleu)")] = "13a",
          as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """Score a detokenized hypothesis file against a reference with sacrebleu."""
    from seqtool.commands.score import score_files

    names = [m.strip().lower() for m in metrics.split(",") if m.strip()]
    results = score_files(hypothesis, ref, names, tokenize)
    if as_json:
        print(json.dumps({k: {"score": round(v.score, 1), "signature": v.signature} for k, v in results.items()}))
    else:
        for result in results.values():
            print(result.text)


@app.command()
def automaton(checkpoint: CheckpointOpt, split: Annotated[str, typer.Option(help="valid or test")] = "test",
              device: DeviceOpt = None) -> None:
    """Print the finite automaton inside a trained state-regularized GRU (cell sr_gru) and, for a Tomita
    task, whether it is the grammar's."""
    from seqtool.commands.automaton import automaton_report

    print(automaton_report(checkpoint, split, device or "auto"), end="")


def main() -> None:
    try:
        app(prog_name="seqtool")
    except SeqtoolError as err:
        _err(f"seqtool: error: {err}")
        sys.exit(2)
    except BaseException as err:
        from seqtool.commands.train import ForcedStop, Stopped

        if isinstance(err, (Stopped, ForcedStop)):
            _err(f"seqtool: {err}")
            sys.exit(128 + err.signum)
        raise
