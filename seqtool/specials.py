"""The special token ids every tokenizer, batch, model and search shares: pad=0, bos=1, eos=2, unk=3.

A ground module (it imports nothing), so models and search need not reach into the data package.
"""

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
