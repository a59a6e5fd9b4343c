"""Pictures of PEGASUS-X's attention: who may attend whom, what the model actually attends, how far
information travels per layer, and what the encoder costs against full attention.

Computing and drawing are separate modules; every name is also importable from minipegx.viz.

patterns.py (NumPy only): the structure
    attention_pattern  which query may attend which key, per layer or over all layers   [G+T, G+T] bool
    influence_hops     after how many layers token j can reach token i                   [T, T] int
probs.py (NumPy only): the model's real probabilities
    densify            blocked probabilities of one layer stitched into the full picture [H, G+T, G+T]
    to_bertviz         short inputs as bertviz's model_view wants them                   NumPy [1, H, G+T, G+T]
minipegx/cost.py: encoder_cost, FLOPs and bytes of the encoder (PEGASUS-X or full attention)
draw.py (matplotlib, imported when first drawn; `pip install 'minipegx[viz]'`):
    plot_attention_pattern, plot_attention, plot_cross_attention, plot_influence, plot_cost

One axis convention everywhere, the reference's: the G global tokens first, then the T tokens, so
index G + t is token t. Rows are queries, columns keys. Shape legend: B batch, H heads, T tokens,
P tokens padded to whole blocks, N blocks, K block size, G global tokens, S decoder steps,
M d_model, F FFN width.

What the encoder computes (encoder.py, geometry in minipegx.blocks), in the terms used here:
  * a token attends the G global tokens and the tokens of its own block of K;
  * a staggered layer (odd layers, when config.stagger_local_blocks) first pads K/2 masked tokens in
    front, so its blocks are shifted by half a block (N + 1 blocks: the first and last are half empty);
  * a global token attends every global token and every token;
  * padding -- to a whole number of blocks, the half blocks of a staggered layer, and tokens that the
    attention_mask marks 0 -- is never attended (its probability is exactly 0). Padding queries are
    still computed (and then ignored), so their rows are part of the pattern.
"""

from ..cost import encoder_cost
from .draw import plot_attention, plot_attention_pattern, plot_cost, plot_cross_attention, plot_influence
from .patterns import attention_pattern, influence_hops
from .probs import densify, encoder_token_labels, to_bertviz

__all__ = ["attention_pattern", "plot_attention_pattern", "densify", "plot_attention", "plot_cross_attention",
           "influence_hops", "plot_influence", "encoder_cost", "plot_cost", "to_bertviz", "encoder_token_labels"]
