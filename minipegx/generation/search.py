"""Search drivers: greedy search and sampling (transformers' _sample) step by step, and `generate`,
which runs greedy search, sampling or beam search (beam.py) to the end, as transformers 5.x generate()
for an encoder-decoder, option for option (options.py).

Greedy search and sampling run the logits processors on the float32 logits (processors.py). Sampling
draws with the Gumbel-max trick from `seed`'s generator, so it follows the same distribution as
torch.multinomial but not torch's random stream.

Shape legend: B inputs, R return sequences per input, N = B*R decoder rows, S tokens so far (start
token included), T encoder tokens, H heads, D head dim, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .beam import beam_search, finish_beams
from .cache import decode_step, fetch, prepare_inputs, start_decoding, step_checks
from .options import fail, resolve_options
from .processors import (encoder_ngrams, gumbel, is_eos, log_softmax, make_rng, process_scores, top_k,
                         warp_for_sampling)


@dataclass
class GreedyStep:
    """One step of greedy search or sampling, rows [N = B * num_return_sequences].

    sequences [N, step+1] the tokens so far (start token first); tokens [N] chosen now; scores [N, V]
    the processed scores the choice was made from (transformers' output_scores); top_tokens /
    top_logprobs [N, 5] the five best candidates and their log-probs (computed when first read: `generate`
    never reads them, and on a GPU a top-5 costs a few kernels per step); finished [N] rows that have
    produced EOS (they are fed pad from then on); done whether generation stops after this step;
    cross_kv_shape the shape of the cross-attention keys given to the decoder ([B, H, T, D])."""
    step: int
    max_steps: int
    sequences: object
    tokens: object
    scores: object
    finished: object
    done: bool
    cross_kv_shape: tuple
    _top: tuple = field(default=None, repr=False, compare=False)

    @property
    def top_tokens(self):
        """The five best candidates [N, 5] of this step, best first (computed when first read)."""
        return self._top5()[1]

    @property
    def top_logprobs(self):
        """Their log-probs [N, 5], best first (computed when first read)."""
        return self._top5()[0]

    def _top5(self):
        if self._top is None:
            self._top = top_k(log_softmax(self.scores), min(5, self.scores.shape[-1]))
        return self._top

    @property
    def num_alive(self):
        """How many of the [N] rows are not finished yet."""
        return int((~self.finished).sum())


def greedy_steps(model, input_ids, attention_mask=None, **options):
    """Greedy search (or sampling with do_sample=True), yielding a GreedyStep per generated token.
    input_ids / attention_mask [B, T]; each step's sequences are [B*R, step+1] (R = num_return_sequences)."""
    opts = resolve_options(model, options)
    if opts.num_beams != 1:
        fail(f"greedy_steps runs num_beams=1; got num_beams={opts.num_beams}: use beam_search_steps")
    yield from greedy(model, *prepare_inputs(model, input_ids, attention_mask), opts)


def greedy(model, ids, mask, opts):
    """transformers' _sample: processors on float32 logits, argmax (or a sample), finished rows get pad."""
    xp = model.xp
    B, R = ids.shape[0], opts.num_return_sequences
    dec, cache = start_decoding(model, ids, mask, R, opts)
    grams = encoder_ngrams(ids, opts.encoder_no_repeat_ngram_size) if opts.encoder_no_repeat_ngram_size else None
    rng = make_rng(opts.seed, xp) if opts.do_sample else None
    seqs = xp.full((B * R, 1), opts.decoder_start_token_id, dtype="int64")       # [N, 1]
    unfinished = xp.ones(B * R, dtype=bool)
    for step in range(1, opts.max_length):
        checks = step_checks(model)
        logits, cache = decode_step(model, dec, seqs[:, -1], cache, checks)       # [N, V]
        scores = process_scores(seqs, logits, opts, grams)
        if opts.do_sample:
            scores = warp_for_sampling(scores, opts, keep=1)
            tokens = xp.argmax(scores + gumbel(rng, scores.shape, xp), axis=-1)
        else:
            tokens = xp.argmax(scores, axis=-1)                                   # [N]
        if opts.eos_token_ids is not None:
            tokens = xp.where(unfinished, tokens, opts.pad_token_id)
        seqs = xp.concatenate([seqs, tokens[:, None]], axis=1)                    # [N, S+1]
        unfinished = unfinished & ~is_eos(tokens, opts)
        alive, = fetch(checks, unfinished.sum())      # the step's one transfer (and its inf/NaN checks)
        done = step == opts.max_length - 1 or alive == 0
        if opts.progress is not None:
            opts.progress(step, opts.max_steps, alive)
        yield GreedyStep(step, opts.max_steps, seqs, tokens, scores, ~unfinished, done, tuple(dec.kvs[0][0].shape))
        if done:
            return


@dataclass
class GenerateOutput:
    """transformers' GenerateEncoderDecoderOutput / GenerateBeamEncoderDecoderOutput (the fields minipegx
    fills): sequences [B*num_return_sequences, S]; sequences_scores [B*num_return_sequences] (beam search,
    with output_scores); scores, per step the processed scores [rows, V] (with output_scores);
    beam_indices [B*num_return_sequences, S-1] (beam search: the flat beam each token came from, -1 pad)."""
    sequences: object
    sequences_scores: object = None
    scores: tuple | None = None
    beam_indices: object = None

    def __getitem__(self, i):
        return [getattr(self, f.name) for f in fields(self)][i]


def generate(model, input_ids, attention_mask=None, **options):
    """Generated ids [B * num_return_sequences, S] starting with the decoder start token, as transformers'
    generate() for an encoder-decoder; a GenerateOutput when return_dict_in_generate=True.

    Options (transformers' names and meanings): max_new_tokens / max_length, min_new_tokens / min_length,
    num_beams, length_penalty, early_stopping (True, False, "never"), num_return_sequences,
    no_repeat_ngram_size, encoder_no_repeat_ngram_size, repetition_penalty, forced_bos_token_id,
    forced_eos_token_id, decoder_start_token_id, eos_token_id, pad_token_id, do_sample, temperature,
    top_k, top_p, output_scores, return_dict_in_generate; and minipegx's seed (int or Generator),
    static_cache (preallocated self-attention cache) and progress (called with
    (step, max_steps, num_alive_beams) after each step). Defaults: model.generation_config, then
    model.config, then transformers' GenerationConfig defaults."""
    opts = resolve_options(model, options)
    ids, mask = prepare_inputs(model, input_ids, attention_mask)
    beam = opts.num_beams > 1
    steps = (beam_search if beam else greedy)(model, ids, mask, opts)
    scores, last = [], None
    for last in steps:
        if opts.output_scores:
            scores.append(last.scores)
    if beam:
        seqs, seq_scores, beam_indices = finish_beams(last.state, opts)
    else:
        seqs, seq_scores, beam_indices = last.sequences, None, None
    if not opts.return_dict_in_generate:
        return seqs
    return GenerateOutput(seqs, seq_scores if opts.output_scores else None,
                          tuple(scores) if opts.output_scores else None, beam_indices)
