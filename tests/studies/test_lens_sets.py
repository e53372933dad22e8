"""Every lens from one forward pass: a study given several lenses equals each lens run alone, and
runs the model once."""

import dataclasses

import pytest
import torch

import glt
from glt.core._meter import Meter
from glt.data._frequency import TokenFrequency
from glt.lenses._protocol import lens_set
from glt.studies.fact_recall._data import Fact
from glt.studies.multiple_choice._prompts import MCPrompt
from tests.helpers import assert_same_result

TEXTS = ["the capital of france is paris .", "he was in the city", "a river of the country"]
FACTS = [Fact("the capital of france is", "paris"), Fact("the river of the country is", "the river")]


def _lenses(model):
    """The logit lens and a tuned lens whose translators are random (so the two read differently)."""
    tuned = glt.TunedLens.from_model(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return [glt.LogitLens.from_model(model), tuned]


def _studies(model):
    freq = TokenFrequency.from_texts(TEXTS * 3, model, progress=False)
    syms = ("paris", "city", "river")
    prompts = [MCPrompt("the capital of france is", syms, ("paris", "city", "country"), 0, "p0"),
               MCPrompt("he was in the city of the", syms, ("paris", "city", "country"), 1, "p1")]
    return {
        "guess_then_refine": lambda lens: glt.run_guess_then_refine(model, lens, TEXTS, frequency=freq, batch_size=2,
                                                                     progress=False),
        "fact_recall": lambda lens: glt.run_fact_recall(model, lens, FACTS, ks=(1, 5), batch_size=1, progress=False),
        "multiple_choice": lambda lens: glt.run_multiple_choice(model, lens, prompts, batch_size=1, progress=False),
        "patching": lambda lens: glt.patch_layers(model, "the capital of france is", "paris is a city of",
                                                  target_options=["the", "a"], source_options=["paris", "river"],
                                                  lens=lens, progress=False),
    }


@pytest.mark.parametrize("study", ["guess_then_refine", "fact_recall", "multiple_choice", "patching"])
def test_several_lenses_equal_each_lens_alone_from_one_forward_pass(tiny_llama, study):
    lenses = _lenses(tiny_llama)
    run = _studies(tiny_llama)[study]
    meters = {}
    alone = {}
    for lens in lenses:
        meters[lens.name] = Meter()
        with meters[lens.name].installed():
            alone[lens.name] = run(lens)
    both_meter = Meter()
    with both_meter.installed():
        both = run(lenses)
    assert list(both) == ["logit", "tuned"]
    for name in both:
        assert both[name].lens == name if hasattr(both[name], "lens") else True
        assert_same_result(both[name], alone[name], f"{study}[{name}]")
    # the forward passes ran once: the same tokens as one lens alone, not twice as many
    assert both_meter.forward_tokens == meters["logit"].forward_tokens == meters["tuned"].forward_tokens > 0
    # and the two lenses did read differently (the test would not notice a lens being ignored otherwise)
    differ = [f.name for f in dataclasses.fields(both["logit"]) if isinstance(getattr(both["logit"], f.name),
              torch.Tensor) and not torch.equal(getattr(both["logit"], f.name), getattr(both["tuned"], f.name))]
    assert differ, study


def test_part_of_speech_with_several_lenses(tiny_llama):
    """The part-of-speech study with a hand-made tagger (no spaCy needed): same rule as above."""

    def tagger(texts):
        out = []
        for t in texts:
            words, at = [], 0
            for w in t.split():
                at = t.index(w, at)
                words.append((at, w, "DET" if w in ("the", "a") else "NOUN"))
                at += len(w)
            out.append(words)
        return out

    lenses = _lenses(tiny_llama)
    kw = dict(tags=["DET", "NOUN"], construction="every", min_prefix_chars=0, tagger=tagger, progress=False)
    alone = {lens.name: glt.run_pos_study(tiny_llama, lens, TEXTS, **kw) for lens in lenses}
    both = glt.run_pos_study(tiny_llama, lenses, TEXTS, **kw)
    for name in ("logit", "tuned"):
        assert_same_result(both[name], alone[name], f"pos[{name}]")
    assert not torch.equal(both["logit"].ranks, both["tuned"].ranks)


def test_lens_set_refuses_bad_lists(tiny_llama):
    logit = glt.LogitLens.from_model(tiny_llama)
    with pytest.raises(glt.GltError, match="named 'logit' like an earlier lens"):
        lens_set([logit, glt.LogitLens.from_model(tiny_llama)])
    with pytest.raises(glt.GltError, match="non-empty list of lenses"):
        lens_set([])
    with pytest.raises(glt.GltError, match=r"lens\[1\] is a str, not a lens"):
        lens_set([logit, "tuned"])
    with pytest.raises(glt.GltError, match="named 'logit' like an earlier lens"):
        glt.run_fact_recall(tiny_llama, [logit, logit], FACTS, progress=False)
