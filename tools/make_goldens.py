"""Write the golden fixtures under tests/goldens/: a tiny random PEGASUS-X saved by transformers and
the reference's own outputs on fixed inputs, so an install without torch still checks numbers.

    python -m tools.make_goldens        # needs transformers + torch==2.13.0 (CPU)

The tiny model exercises the hard parts: block_size 4, 2 global tokens, stagger on, 3 encoder layers,
a batch whose second row is padded, and a length (13) that is not a multiple of the block size.
"""

from pathlib import Path

import numpy as np
import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "goldens"
CONFIG = dict(vocab_size=163, d_model=16, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2,
              decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=24, num_global_tokens=2,
              block_size=4, max_position_embeddings=128, activation_function="relu", dropout=0.0,
              stagger_local_blocks=True, scale_embedding=True)


def main():
    torch.manual_seed(20260101)
    model = transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(**CONFIG)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so outputs are not all near zero
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    model.save_pretrained(OUT / "tiny")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, CONFIG["vocab_size"], size=(2, 13))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    ids[1, 9:] = 0
    labels = rng.integers(5, CONFIG["vocab_size"], size=(2, 6))
    labels[1, 4:] = -100
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    labels=torch.as_tensor(labels), output_hidden_states=True)
        greedy = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                                num_beams=1, do_sample=False, max_new_tokens=8, min_new_tokens=8)
        beam = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                              num_beams=3, do_sample=False, max_new_tokens=8, length_penalty=0.8)
    np.savez_compressed(OUT / "tiny_outputs.npz", input_ids=ids, attention_mask=mask, labels=labels,
                        logits=out.logits.numpy(), loss=out.loss.numpy(),
                        encoder_last_hidden_state=out.encoder_last_hidden_state.numpy(),
                        decoder_hidden_state_1=out.decoder_hidden_states[1].numpy(),
                        greedy_ids=greedy.numpy(), beam3_ids=beam.numpy(),
                        versions=np.array([transformers.__version__, torch.__version__]))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
