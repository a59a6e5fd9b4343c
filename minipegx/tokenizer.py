"""Pegasus' tokenizer on the sentencepiece package alone: same ids and same text as transformers.

The vocabulary is sentencepiece's, with 105 special ids in front (offset 103, because Pegasus'
spiece.model already holds ``<pad>`` 0 and ``</s>`` 1, which keep their ids):

    0 <pad>   1 </s>   2 <mask_1>   3 <mask_2>   4..104 <unk_2>..<unk_102>   105.. sentencepiece piece i+103

so sentencepiece's ``<unk>`` (its id 2) is 105. ``</s>`` is appended to every text; there is no ``<s>``.

Text goes through the steps of transformers' PegasusTokenizer (transformers 5, the class that
AutoTokenizer returns), written out so each one can be printed:

    1. split the raw text on special tokens written in it ("<mask_1>", "</s>", "<unk_5>", ...)
    2. normalize each piece with spiece.model's own rules (nmt_nfkc: NFKC, tabs/newlines -> " ")
    3. squeeze runs of spaces to one, turn spaces into "▁", put "▁" in front
    4. cut into words, each starting with "▁", and segment each word with the unigram model

Step 4 is sentencepiece's own Viterbi; steps 1-3 are here because transformers does them
slightly differently from sentencepiece's encode: it keeps a trailing space as a "▁" token
("hello " -> ▁ h e l l o ▁ </s>), and sentencepiece's encode would drop it.

Decoding joins the pieces, turns "▁" back into spaces and drops the one space in front, like
transformers (clean_up_tokenization_spaces is False for Pegasus unless tokenizer_config.json says so).

Known differences from transformers, each on purpose:
  * a combining mark right after a character that nmt_nfkc rewrites ("ª\u0301", "ﬁ\u0301") is kept,
    as sentencepiece keeps it; the tokenizers library drops it.
  * <mask_1> is 2 and <mask_2> is 3 always; transformers 5 swaps them when it converts spiece.model
    under a tokenizer_config.json that names mask_token/mask_token_sent (not with tokenizer.json).
  * decode raises on ids outside the vocabulary (transformers skips them silently), and
    return_tensors="np" on texts of different lengths raises instead of making an object array.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

import numpy as np

# The files (spiece.model, tokenizer_config.json, tokenizer.json) are read and written in checkpoint/.
from .checkpoint.tokenizer_files import NO_LIMIT, OFFSET, SPACE, SPECIAL_TOKENS, load_spiece, read_folder
from .errors import MiniPegxWarning, TokenizerError, TruncationWarning
from .limits import as_path


class Encoding(dict):
    """What ``Tokenizer.__call__`` returns: a dict with ``input_ids`` and ``attention_mask``
    (also readable as attributes, like transformers' BatchEncoding): lists of B lists of ids, or
    int64 arrays [B, T] with return_tensors="np"."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Tokenizer:
    """PegasusTokenizer-compatible tokenizer over one spiece.model.

    ``Tokenizer(spiece_model_path, model_max_length=None)`` or ``Tokenizer.from_pretrained(dir)``.
    ``model_max_length`` is the limit that ``truncation=True`` uses when no ``max_length`` is given.
    Texts in, ids out: ``tok(texts, padding=True, return_tensors="np")`` gives input_ids and
    attention_mask [B, T]; ``decode`` takes ids [S] back to text.
    """

    def __init__(self, spiece_model_path, model_max_length: int | None = None, *,
                 clean_up_tokenization_spaces: bool = False, _limit_source: str | None = None):
        path = as_path(spiece_model_path, TokenizerError, "spiece_model_path")
        self.sp, self.normalizer = load_spiece(path)
        self.spiece_model_path = path
        if model_max_length is not None and model_max_length >= NO_LIMIT:
            model_max_length = None
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._limit_source = _limit_source or f"model_max_length={model_max_length}"

        self.offset = OFFSET
        self.pad_token_id, self.eos_token_id = 0, 1
        self.mask_token_sent_id, self.mask_token_id = 2, 3          # <mask_1>, <mask_2>
        self.unk_token = self.sp.id_to_piece(self.sp.unk_id())       # "<unk>"
        self.unk_token_id = self.sp.unk_id() + OFFSET                # 105
        self.vocab_size = self.sp.get_piece_size() + OFFSET
        self._space_id = self.sp.piece_to_id(SPACE) + OFFSET         # the lone "▁" word (unk if absent)

        # Special tokens as transformers registers them: the 105 above plus <unk>.
        self._special_to_id = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        self._special_to_id[self.unk_token] = self.unk_token_id
        self.all_special_ids = sorted(self._special_to_id.values())
        # Leftmost-longest match, like the tokenizers library ("<unk_102>" before "<unk_10>").
        by_length = sorted(self._special_to_id, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, by_length)) + ")")

    @classmethod
    def from_pretrained(cls, path) -> "Tokenizer":
        """Load from a checkpoint directory holding spiece.model (and optionally tokenizer_config.json,
        special_tokens_map.json), or from a path to the .model file itself."""
        path = as_path(path, TokenizerError)
        if os.path.isfile(path):
            return cls(path)
        if not os.path.isdir(path):
            raise TokenizerError(f"no checkpoint directory or spiece.model at {path!r}")
        model_path, max_len, cleanup = read_folder(path)
        return cls(
            model_path,
            model_max_length=max_len,
            clean_up_tokenization_spaces=cleanup,
            _limit_source=f"model_max_length={max_len} from {path}/tokenizer_config.json",
        )

    def save_pretrained(self, directory, overwrite: bool = False) -> list[str]:
        """Write the folder transformers reads: spiece.model, tokenizer.json (AutoTokenizer and
        PegasusTokenizerFast load it), tokenizer_config.json and special_tokens_map.json. Writing over the
        folder this tokenizer was loaded from needs overwrite=True. Returns the paths written."""
        from .checkpoint.writer import save_tokenizer

        return save_tokenizer(self, directory, overwrite=overwrite)

    # ---- sizes and vocabulary ----------------------------------------------------------------

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"Tokenizer({self.spiece_model_path!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length})")

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """One id -> its token string; ids [S] (a list or an array) -> a list of S token strings."""
        if _is_int(ids):
            return self._id_to_token(self._check_ids([ids])[0])
        ids = self._check_ids(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(i) for i in ids if i not in skip]

    def convert_tokens_to_ids(self, tokens):
        """One token string -> its id; a list -> a list. Unknown tokens give unk_token_id (105)."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _id_to_token(self, i: int) -> str:
        return SPECIAL_TOKENS[i] if i < OFFSET + 2 else self.sp.id_to_piece(i - OFFSET)

    def _token_to_id(self, token: str) -> int:
        if token in self._special_to_id:
            return self._special_to_id[token]
        return self.sp.piece_to_id(token) + OFFSET          # sentencepiece gives unk for unknown

    # ---- encoding ------------------------------------------------------------------------------

    def tokenize(self, text) -> list[str]:
        """Token strings of one text, without the </s> that encode appends."""
        return self.convert_ids_to_tokens(self._encode_one(_as_text(text, 0), 0))

    def encode(self, text, truncation=None, max_length: int | None = None,
               padding=False) -> list[int]:
        """Ids of one text, </s> appended: a plain list [T], like transformers' encode."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise TokenizerError(f"encode takes one text (str or UTF-8 bytes), not {type(text).__name__}; "
                                 f"for a batch call the tokenizer itself: tok(texts)")
        return self(text, padding=padding, truncation=truncation, max_length=max_length)["input_ids"]

    def __call__(self, texts, padding=False, truncation=None, max_length: int | None = None,
                 return_tensors: str | None = None) -> Encoding:
        """Encode a text or a batch of texts.

        padding: False / "do_not_pad"; True / "longest" (to the batch's longest); "max_length".
        truncation: True / "longest_first" / "only_first" cut to max_length (or model_max_length),
            keeping </s> last, with a TruncationWarning; False / "do_not_truncate" never cut;
            None (default) cuts only when max_length is given, as transformers does.
        return_tensors: None (lists) or "np" (int64 arrays [B, T]).
        A single string gives ``input_ids`` as one list (or a [1, T] array with "np").
        """
        single = isinstance(texts, (str, bytes, bytearray))
        if single:
            batch = [texts]
        elif isinstance(texts, (list, tuple)):
            batch = list(texts)
        else:
            raise TokenizerError(
                f"texts must be a str (or UTF-8 bytes) or a list of them, not {type(texts).__name__}"
            )
        truncate, pad_mode, limit = self._strategies(padding, truncation, max_length)

        sequences = []
        for index, item in enumerate(batch):
            ids = self._encode_one(_as_text(item, index), index) + [self.eos_token_id]
            if truncate and len(ids) > limit:
                self._warn_truncation(index, len(ids), limit, max_length)
                ids = ids[: limit - 1] + [self.eos_token_id]
            sequences.append(ids)

        # Pad on the right with <pad> 0 (mask 0): to the longest, or up to the limit (longer ones stay).
        if pad_mode == "longest":
            width = max((len(s) for s in sequences), default=0)
        elif pad_mode == "max_length" and limit is not None:
            width = limit
        else:
            width = 0
        masks = [[1] * len(s) + [0] * (width - len(s)) for s in sequences]
        sequences = [s + [self.pad_token_id] * (width - len(s)) for s in sequences]

        if return_tensors == "np":
            if len({len(s) for s in sequences}) > 1:
                raise TokenizerError(
                    "texts of different lengths cannot make one array: pass padding=True "
                    "(and truncation=True to bound the length)"
                )
            width = len(sequences[0]) if sequences else 0
            input_ids = np.array(sequences, dtype=np.int64).reshape(len(sequences), width)  # [B, T]
            attention_mask = np.array(masks, dtype=np.int64).reshape(len(sequences), width)  # [B, T]
            return Encoding(input_ids=input_ids, attention_mask=attention_mask)
        if return_tensors is not None:
            raise TokenizerError(f"return_tensors={return_tensors!r}: minipegx gives None (lists) or 'np'")
        if single:
            return Encoding(input_ids=sequences[0], attention_mask=masks[0])
        return Encoding(input_ids=sequences, attention_mask=masks)

    def _strategies(self, padding, truncation, max_length):
        """(truncate?, pad mode None/'longest'/'max_length', length limit) from transformers' arguments."""
        if max_length is not None and (not _is_int(max_length) or max_length < 1):
            raise TokenizerError(f"max_length={max_length!r}: give a positive int (</s> counts as one token)")
        if truncation is None:
            truncation = max_length is not None and padding is False   # transformers' legacy rule
        if truncation in (True, "longest_first", "only_first"):
            truncate = True
        elif truncation in (False, "do_not_truncate"):
            truncate = False
        else:
            raise TokenizerError(f"truncation={truncation!r}: use True, False or 'longest_first'")
        if padding in (True, "longest"):
            pad_mode = "longest"
        elif padding in (False, "do_not_pad"):
            pad_mode = None
        elif padding == "max_length":
            pad_mode = "max_length"
        else:
            raise TokenizerError(f"padding={padding!r}: use False, True/'longest' or 'max_length'")
        limit = max_length if max_length is not None else self.model_max_length
        if truncate and limit is None:
            truncate = False                # nothing to cut to: transformers does the same
        return truncate, pad_mode, limit

    def _warn_truncation(self, index: int, n_tokens: int, limit: int, max_length) -> None:
        source = f"max_length={limit}" if max_length is not None else self._limit_source
        warnings.warn(
            f"input {index} has {n_tokens} tokens (</s> included); cut to {limit} by {source}, "
            f"dropping {n_tokens - limit} tokens from its end. PEGASUS-X itself reads up to 16384 "
            f"tokens: pass a larger max_length (or truncation=False) to keep them.",
            TruncationWarning,
            stacklevel=_user_stacklevel(),
        )

    def _encode_one(self, text: str, index: int) -> list[int]:
        """Ids of one text without </s>: special tokens, then normalize, then words, then unigram."""
        if not text.strip():
            warnings.warn(
                f"input {index} is {'empty' if not text else 'only whitespace'}: it encodes to </s> "
                f"(after at most a lone ▁), as in transformers, and a summary of it will be meaningless",
                MiniPegxWarning,
                stacklevel=_user_stacklevel(),
            )
        ids: list[int] = []
        for chunk in self._special_re.split(text):      # odd positions are the special tokens
            if chunk in self._special_to_id:
                ids.append(self._special_to_id[chunk])
            elif chunk:
                ids.extend(self._encode_plain(chunk))
        return ids

    def _encode_plain(self, chunk: str) -> list[int]:
        """Ids of text holding no special token (steps 2-4 of the module docstring)."""
        # 2. normalize with spiece.model's rules (nmt_nfkc also makes a "▁" written in the text a space)
        text = self.normalizer.Normalize(chunk)
        # 3. runs of spaces -> one, spaces -> "▁", "▁" in front
        text = re.sub(" {2,}", " ", text).replace(" ", SPACE)
        if not text:
            return []
        if not text.startswith(SPACE):
            text = SPACE + text
        # 4. words "▁xxx"; sentencepiece puts the "▁" back itself (add_dummy_prefix), a lone "▁" is one piece
        words = re.findall(SPACE + "[^" + SPACE + "]*", text)
        bodies = [w[1:] for w in words if len(w) > 1]
        encoded = iter(self.sp.encode(bodies)) if bodies else iter(())
        ids: list[int] = []
        for w in words:
            if len(w) == 1:
                ids.append(self._space_id)
            else:
                ids.extend(i + OFFSET for i in next(encoded))
        return ids

    # ---- decoding ------------------------------------------------------------------------------
    # (_host, below the class: CuPy ids are brought back with one transfer, as transformers accepts GPU tensors)

    def decode(self, ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """Text of one sequence of ids (a list, a 1-D array, or one int), as transformers decodes it."""
        if _is_int(ids):
            ids = [ids]
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        # transformers' Metaspace decoder: "▁" -> " ", and the first token loses its leading space.
        text = "".join(tokens).replace(SPACE, " ")
        if tokens and tokens[0].startswith(SPACE):
            text = text[1:]
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return _clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """decode for each row of a list of lists or a [B, S] array."""
        sequences = _host(sequences)   # device ids (CuPy, as generate returns them) come back in one transfer
        if isinstance(sequences, np.ndarray) and sequences.ndim != 2:
            raise TokenizerError(f"batch_decode takes a [B, S] array, got shape {sequences.shape}")
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]

    def _check_ids(self, ids) -> list[int]:
        """Plain ints in [0, vocab_size), or a TokenizerError naming the first bad one."""
        if hasattr(ids, "get") and not isinstance(ids, np.ndarray) and "input_ids" in ids:
            ids = ids["input_ids"]
        arr = np.asarray(_host(ids))
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise TokenizerError(
                f"expected one sequence of int ids, got {type(ids).__name__} of shape {arr.shape} "
                f"and dtype {arr.dtype} (for a batch use batch_decode)"
            )
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if bad.size:
            k = int(bad[0])
            hint = " (-100 is the loss's ignore index: replace it with pad_token_id 0)" if arr[k] == -100 else ""
            raise TokenizerError(
                f"id {int(arr[k])} at position {k} is outside the vocabulary [0, {self.vocab_size}){hint}"
            )
        return [int(i) for i in arr]


# ---- helpers ----------------------------------------------------------------------------------


def _as_text(item, index: int) -> str:
    """A str to tokenize, from a str or UTF-8 bytes; TokenizerError for anything else."""
    if isinstance(item, (bytes, bytearray)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError(
                f"input {index}: bytes are not valid UTF-8 at byte offset {e.start} ({e.reason}); "
                f"decode them with the right encoding first (e.g. data.decode('latin-1')) and pass str"
            ) from None
    if not isinstance(item, str):
        raise TokenizerError(f"input {index} is a {type(item).__name__}: pass str (or UTF-8 bytes)")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(
            f"input {index} has a lone surrogate at character {e.start} ({item[e.start]!r}), which is not "
            f"text: read the file with errors='replace' or fix the string"
        ) from None
    return item


def _user_stacklevel() -> int:
    """The warnings.warn stacklevel that points at the caller's line, outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (off for Pegasus unless tokenizer_config.json turns it on)."""
    for before, after in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                          (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]:
        text = text.replace(before, after)
    return text


__all__ = ["Tokenizer", "Encoding", "OFFSET", "SPECIAL_TOKENS"]


def _host(ids):
    """A device (CuPy) array of ids as a NumPy array (one transfer); anything else as it is."""
    from .backend import is_device_array, to_numpy
    return to_numpy(ids) if is_device_array(ids) else ids
