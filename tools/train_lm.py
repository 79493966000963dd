"""Train weightcodec's small causal LM ("gpt2-tiny") on the Jane Austen corpus, for real, on CPU.

1. Corpus: the six novels from the Debian package r-cran-janeaustenr (see
   ``weightcodec.evaluation.lm``), fixed train/validation/test split by contiguous chunks.
2. Tokenizer: byte-level BPE (``tokenizers``) trained on the train split only.
3. Model: ``transformers.GPT2LMHeadModel`` from scratch (tied LM head), AdamW, linear warm-up then
   cosine decay; the validation loss (first ``--eval-tokens`` validation tokens, fixed windows) is
   measured every ``--eval-every`` steps; training stops at ``--max-steps``, when the validation loss has not
   improved by ``--min-delta`` (relative) for ``--patience`` evaluations, or at ``--max-minutes``.
   The checkpoint with the best validation loss is kept.
4. Output: a Hugging Face folder (config.json, model.safetensors, generation_config.json,
   tokenizer files) plus ``training.json`` (corpus, hashes, hyper-parameters, loss curve, test
   perplexity, versions, wall time), written atomically (a temporary folder renamed into place).

Fixed seeds and thread count; deterministic algorithms. Example (the published model):

    nice -n 19 python -m tools.train_lm            # -> $WEIGHTCODEC_CACHE/models/gpt2-tiny
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

from tools.training import CONTEXT_SETTINGS, log, seed_everything
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import lm

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int, seq_len: int):
    """Byte-level BPE (GPT-2 style) on ``texts``; returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   model_max_length=seq_len)


def lr_at(step: int, *, lr: float, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_ratio`` at ``max_steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batches(train_ids: torch.Tensor, seq_len: int, batch_size: int, seed: int):
    """Endless deterministic batches: per epoch, disjoint windows at a shifted offset, shuffled."""
    epoch = 0
    while True:
        offset = (epoch * 97) % seq_len
        starts = torch.arange(offset, train_ids.numel() - seq_len, seq_len)
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        starts = starts[torch.randperm(starts.numel(), generator=gen)]
        for i in range(0, starts.numel() - batch_size + 1, batch_size):
            yield epoch, torch.stack([train_ids[s:s + seq_len] for s in starts[i:i + batch_size].tolist()])
        epoch += 1


def write_folder_atomically(out: Path, fill) -> None:
    """Call ``fill(tmp_dir)`` then move the finished folder to ``out`` (replacing an old one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        for path in tmp.iterdir():
            path.chmod(0o644)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output folder [default: $WEIGHTCODEC_CACHE/models/gpt2-tiny]")
@click.option("--corpus-root", type=click.Path(path_type=Path), default=None,
              help="janeaustenr folder [default: $WEIGHTCODEC_JANEAUSTENR or the Debian location]")
@click.option("--vocab-size", default=4096)
@click.option("--n-layer", default=5)
@click.option("--n-embd", default=256)
@click.option("--n-head", default=4)
@click.option("--seq-len", default=256, help="context length (n_positions)")
@click.option("--dropout", default=0.1)
@click.option("--batch-size", default=8)
@click.option("--lr", default=2e-3, help="peak AdamW learning rate")
@click.option("--min-lr-ratio", default=0.1, help="final learning rate / peak")
@click.option("--weight-decay", default=0.1)
@click.option("--warmup", default=25, help="warm-up steps")
@click.option("--max-steps", default=3000, help="cosine schedule length and step budget")
@click.option("--eval-every", default=25, help="steps between validation evaluations")
@click.option("--eval-tokens", default=16384, help="validation tokens scored during training (all at the end)")
@click.option("--patience", default=6, help="stop after this many evaluations without improvement")
@click.option("--min-delta", default=0.002, help="relative validation-loss improvement that counts")
@click.option("--max-minutes", default=120.0, help="wall-time budget for the training loop")
@click.option("--stop-step", type=int, default=None,
              help="stop after this many steps of the --max-steps schedule (reproduces a run that a wall-time "
                   "budget stopped, without depending on the clock)")
@click.option("--threads", default=2, help="torch threads (the machine is shared)")
@click.option("--seed", default=0)
def main(out: Path | None, corpus_root: Path | None, vocab_size: int, n_layer: int, n_embd: int, n_head: int,
         seq_len: int, dropout: float, batch_size: int, lr: float, min_lr_ratio: float, weight_decay: float,
         warmup: int, max_steps: int, eval_every: int, eval_tokens: int, patience: int, min_delta: float,
         max_minutes: float, stop_step: int | None, threads: int, seed: int) -> None:
    """Train the gpt2-tiny causal LM and save it as a Hugging Face folder plus training.json."""
    try:
        run(**locals())
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None


def run(*, out, corpus_root, vocab_size, n_layer, n_embd, n_head, seq_len, dropout, batch_size, lr,
        min_lr_ratio, weight_decay, warmup, max_steps, eval_every, eval_tokens, patience, min_delta, max_minutes,
        threads, seed, stop_step=None) -> None:
    hparams = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # tokenizers' thread pool
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tokenizers
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    out = out if out is not None else lm.default_gpt2_tiny_dir()
    started = time.time()
    seed_everything(seed, threads)

    corpus = lm.corpus_record(corpus_root)
    if not corpus["files_match_pinned"]:
        log("WARNING: corpus files differ from the pinned r-cran-janeaustenr 1.0.0-1 hashes")
    train_texts = lm.corpus_split("train", corpus_root)
    log(f"corpus: {corpus['split_chars']} characters per split")

    tokenizer = train_tokenizer(train_texts, vocab_size, seq_len)
    ids = {split: lm.split_token_ids(tokenizer, split, corpus_root) for split in lm.SPLITS}
    log(f"tokenizer: vocab {len(tokenizer)}; tokens per split {({s: int(t.numel()) for s, t in ids.items()})} "
        f"({time.time() - started:.0f} s)")

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=seq_len, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, n_inner=4 * n_embd, resid_pdrop=dropout, embd_pdrop=dropout,
                        attn_pdrop=dropout, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise RuntimeError("the LM head is not tied to the token embedding")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters (tied LM head), {n_layer} layers, d={n_embd}, context {seq_len}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def validation_loss() -> float:
        return lm.causal_lm_nll(model, ids["validation"], seq_len=seq_len, limit_tokens=eval_tokens,
                                batch_size=16).mean_nll

    curve = []
    best = (math.inf, 0, None)
    counted = math.inf
    since_best = 0
    stop_reason = "max_steps"
    train_started = time.time()
    running, running_n = 0.0, 0
    stream = batches(ids["train"], seq_len, batch_size, seed)
    model.train()
    step = 0
    epoch = 0
    while step < max_steps:
        for group in optim.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, max_steps=max_steps, min_ratio=min_lr_ratio)
        epoch, batch = next(stream)
        loss = model(input_ids=batch, labels=batch).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        running += loss.item()
        running_n += 1
        step += 1
        if step % eval_every == 0 or step == max_steps:
            val = validation_loss()
            model.train()
            elapsed = time.time() - train_started
            point = {"step": step, "epoch": epoch, "tokens_seen": step * batch_size * seq_len,
                     "lr": optim.param_groups[0]["lr"], "train_loss": running / running_n,
                     "val_loss": val, "val_ppl": math.exp(val), "elapsed_s": round(elapsed, 1)}
            # the curve's val_loss is on the first eval_tokens validation tokens; final[...] on all
            curve.append(point)
            running, running_n = 0.0, 0
            log(f"step {step:5d} epoch {epoch} train {point['train_loss']:.4f} val {val:.4f} "
                f"(ppl {math.exp(val):.2f}) lr {point['lr']:.2e} {elapsed / 60:.1f} min")
            # patience counts evaluations without a gain of min_delta over the last *counted* gain
            # (as Keras' EarlyStopping does): a slow, steady fall is progress, not a plateau
            if val < counted * (1 - min_delta):
                counted, since_best = val, 0
            else:
                since_best += 1
            if val < best[0]:
                best = (val, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if since_best >= patience:
                stop_reason = f"validation loss flat for {patience} evaluations"
                break
            if elapsed > max_minutes * 60:
                stop_reason = f"time budget of {max_minutes} min"
                break
            if stop_step is not None and step >= stop_step:
                stop_reason = f"--stop-step {stop_step}"
                break
    train_seconds = time.time() - train_started
    model.load_state_dict(best[2])
    model.eval()
    log(f"stopped at step {step} ({stop_reason}); best validation loss {best[0]:.4f} at step {best[1]}")

    final = {}
    for split in ("validation", "test"):
        t0 = time.time()
        res = lm.causal_lm_nll(model, ids[split], seq_len=seq_len, batch_size=16)
        final[split] = {"tokens": res.tokens, "windows": res.windows, "mean_nll": res.mean_nll,
                        "perplexity": res.perplexity, "seconds": round(time.time() - t0, 1)}
        log(f"{split}: perplexity {res.perplexity:.3f} on {res.tokens} tokens ({time.time() - t0:.1f} s)")
    t0 = time.time()
    strided = lm.causal_lm_nll(model, ids["test"], seq_len=seq_len, stride=seq_len // 2, batch_size=16)
    final["test_stride_half"] = {"tokens": strided.tokens, "windows": strided.windows,
                                 "perplexity": strided.perplexity, "seconds": round(time.time() - t0, 1)}

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        record = {
            "model": lm.GPT2_TINY_NAME,
            "architecture": "transformers.GPT2LMHeadModel (tied LM head)",
            "parameters": n_params,
            "config": {k: getattr(config, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                                                          "n_inner", "resid_pdrop")},
            "corpus": corpus,
            "tokens": {s: int(t.numel()) for s, t in ids.items()},
            "tokenizer": {"kind": "byte-level BPE (tokenizers), trained on the train split",
                          "vocab_size": len(tokenizer), "eos": EOS,
                          "tokenizer_json_sha256": lm.sha256_file(folder / "tokenizer.json")},
            "hyperparameters": hparams,
            "optimizer": "AdamW betas (0.9, 0.95), no decay on biases/LayerNorm, grad clip 1.0",
            "curve": curve,
            "stop_reason": stop_reason,
            "stopped_at_step": step,
            "best_step": best[1],
            "final": final,
            "perplexity_method": "weightcodec.evaluation.lm.perplexity: disjoint 256-token windows "
                                 "(stride 256), each chunk followed by EOS",
            "train_seconds": round(train_seconds, 1),
            "wall_seconds": round(time.time() - started, 1),
            "machine": {"threads": threads, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "note": "shared 2-core machine, niced: timings are pessimistic"},
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
            "model_safetensors_sha256": lm.sha256_file(folder / "model.safetensors"),
            "command": "python -m tools.train_lm " + " ".join(sys.argv[1:]),
        }
        (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")

    write_folder_atomically(out, fill)
    log(f"wrote {out} ({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
