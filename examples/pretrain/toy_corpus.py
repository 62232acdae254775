"""A toy English-like corpus (random sentences of a small grammar) and a 400-piece BPE tokenizer.

Usage: PYTHONPATH=src python examples/pretrain/toy_corpus.py OUT_DIR
Writes OUT_DIR/train.txt (20,000 lines), test.txt (3,500), parallel.txt (500), tokenizer/.
"""
import os
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "toy"
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
det = ["the", "a", "every", "some", "this", "that"]
adj = ["big", "small", "red", "old", "young", "happy", "quiet", "green", "tall", "short", "bright", "dark"]
noun = ["dog", "cat", "bird", "farmer", "child", "teacher", "river", "house", "tree", "garden", "king", "boat", "horse", "baker", "friend"]
verb_t = ["sees", "likes", "follows", "paints", "finds", "helps", "watches", "carries", "builds", "calls"]
verb_i = ["sleeps", "runs", "sings", "waits", "laughs", "swims", "falls"]
prep = ["near", "under", "behind", "with", "over", "beside"]
adv = ["slowly", "quickly", "often", "never", "today", "again"]
def np_():
    s = [rng.choice(det)]
    if rng.random() < 0.5: s.append(rng.choice(adj))
    s.append(rng.choice(noun))
    if rng.random() < 0.2: s += [rng.choice(prep)] + np_()
    return s
def sent():
    s = np_()
    if rng.random() < 0.6: s += [rng.choice(verb_t)] + np_()
    else: s += [rng.choice(verb_i)]
    if rng.random() < 0.3: s.append(rng.choice(adv))
    if rng.random() < 0.2: s += ["and"] + sent()[:-1]
    return s + ["."]
lines = [" ".join(sent()).replace(" .", ".") for _ in range(24000)]
lines = [l[0].upper() + l[1:] for l in lines]
open(f"{out}/train.txt", "w").write("\n".join(lines[:20000]) + "\n")
open(f"{out}/test.txt", "w").write("\n".join(lines[20000:23500]) + "\n")
open(f"{out}/parallel.txt", "w").write("\n".join(lines[23500:]) + "\n")
from xlt.testing import train_bpe_tokenizer
tok = train_bpe_tokenizer(lines[:5000], vocab_size=400, add_bos=False)
tok.save_pretrained(f"{out}/tokenizer")
print(len(tok), lines[:3])
