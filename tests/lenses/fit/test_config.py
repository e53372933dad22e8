"""`glt.TrainConfig`: a frozen, validated recipe; the keyword form of `glt.train_tuned_lens` is the
same run; checkpoints keep their 0.1.0 fingerprint."""

import dataclasses
import json
import os
import shutil

import pytest
import torch
from jaxtyping import TypeCheckError

import glt
from glt.lenses.fit._config import TrainConfig, config_with
from glt.lenses.fit._train import _SETTINGS, train_tuned_lens
from tests.core.test_legacy_files import EXPECTED, F
from tests.lenses.fit.test_train import TRAIN

RECIPE = TrainConfig(max_tokens=300, tokens_per_step=100, least_squares_tokens=200, row_chunk=32, optimizer="sgd",
                     seed=3)
RUN = dict(progress=False)  # the run's own arguments, not part of the recipe


def test_defaults_are_the_documented_recipe_and_the_config_is_frozen():
    cfg = TrainConfig()
    assert (cfg.init, cfg.optimizer, cfg.max_tokens) == ("least_squares", "linesearch", 65_536)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.5  # type: ignore[misc]
    assert glt.TrainConfig is TrainConfig and glt.lenses.fit.TrainConfig is TrainConfig and "TrainConfig" in glt.__all__


def test_layers_are_kept_as_a_tuple_so_equal_recipes_compare_and_hash_equal():
    a, b = TrainConfig(layers=[1, 2]), TrainConfig(layers=range(1, 3))
    assert a.layers == (1, 2) and a == b and hash(a) == hash(b)
    assert TrainConfig(seed=1) != TrainConfig(seed=2)


@pytest.mark.parametrize("field,value,match", [
    ("init", "bogus", r"TrainConfig.init must be one of 'least_squares', 'zero' or TunedLens, got str 'bogus'"),
    ("optimizer", "lbfgs", r"TrainConfig.optimizer must be one of 'linesearch', 'sgd', 'adam', got str 'lbfgs'"),
    ("lr", 1, r"TrainConfig.lr must be float, got int 1"),
    ("compute_dtype", "bf16", r"TrainConfig.compute_dtype must be torch.dtype, got str 'bf16'"),
    ("layers", "12", r"TrainConfig.layers must be a sequence of int or None, got str '12'"),
    ("layers", [1.0], r"TrainConfig.layers must be"),
    ("max_tokens", -1, r"TrainConfig.max_tokens must be an int >= 0, got -1"),
    ("tokens_per_step", 0, r"TrainConfig.tokens_per_step must be an int >= 1"),
    ("seq_len", 1, r"TrainConfig.seq_len must be an int >= 2"),
    ("val_rows", 0, r"TrainConfig.val_rows must be an int >= 1"),
    ("momentum", 1.0, r"TrainConfig.momentum must be a number in \[0.0, 1.0\), got 1.0"),
    ("frequency_alpha", float("nan"), r"TrainConfig.frequency_alpha must be a number in \[0.0, inf\), got nan"),
    ("lr", float("inf"), r"TrainConfig.lr must be a number in \[0.0, inf\)"),
    ("ridge", -1e-3, r"TrainConfig.ridge must be a number"),
])
def test_a_bad_field_raises_glterror_naming_it(field, value, match):
    with pytest.raises(glt.GltError, match=match):  # the keyword form checks before it builds the config
        config_with(TrainConfig(), {field: value})
    with pytest.raises(glt.GltError, match=match):
        train_tuned_lens(None, ["a b"], **{field: value})
    # built directly: under pytest jaxtyping's hook may refuse a wrongly *typed* field first
    with pytest.raises((glt.GltError, TypeCheckError)):
        TrainConfig(**{field: value})


def test_an_unknown_setting_raises_listing_the_fields_and_run_arguments():
    with pytest.raises(glt.GltError, match=r"unknown settings \['steps'\]: pass TrainConfig fields \(init, max_tokens.*"
                                           r"or the run's own arguments \(frequency_counts, checkpoint_dir"):
        train_tuned_lens(None, ["a b"], steps=4)


def test_keywords_and_config_are_the_same_run(tiny_llama):
    by_config = train_tuned_lens(tiny_llama, TRAIN, RECIPE, **RUN)
    by_keywords = train_tuned_lens(tiny_llama, TRAIN, **{f.name: getattr(RECIPE, f.name)
                                                          for f in dataclasses.fields(RECIPE)}, **RUN)
    assert torch.equal(by_config.weight, by_keywords.weight) and torch.equal(by_config.bias, by_keywords.bias)
    a, b = (dict(x.config["training"]) for x in (by_config, by_keywords))
    for t in (a, b):
        t.pop("seconds"), t.pop("history")
    assert a == b and set(_SETTINGS) <= set(a)
    # a keyword replaces that field of the config
    other = train_tuned_lens(tiny_llama, TRAIN, RECIPE, seed=4, **RUN)
    same = train_tuned_lens(tiny_llama, TRAIN, dataclasses.replace(RECIPE, seed=4), **RUN)
    assert torch.equal(other.weight, same.weight) and not torch.equal(other.weight, by_config.weight)
    assert other.config["training"]["seed"] == 4


def test_a_checkpoint_written_from_keywords_resumes_from_a_config(tiny_llama, tmp_path):
    class Stop(Exception):
        pass

    def crash(step, tokens, lens):
        if step == 2:
            raise Stop

    kw = {f.name: getattr(RECIPE, f.name) for f in dataclasses.fields(RECIPE)}
    with pytest.raises(Stop):
        train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path, checkpoint_every=1, callback=crash, **kw, **RUN)
    done: list[int] = []
    train_tuned_lens(tiny_llama, TRAIN, RECIPE, checkpoint_dir=tmp_path, callback=lambda s, t, lens: done.append(s),
                     **RUN)
    assert done == [3]


def test_a_0_1_0_checkpoint_resumes_from_a_config(tmp_path):
    """glt 0.1.0 wrote this checkpoint from keyword arguments; the same recipe as a TrainConfig
    has the same fingerprint, so training resumes after its step 2."""
    e = EXPECTED["train_checkpoint"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = glt.load_model(str(F / EXPECTED["model"]["folder"]))
    assert json.loads((F / "train_checkpoint" / "latest" / "state.json").read_text())["step"] == e["step"]
    shutil.copytree(F / "train_checkpoint", tmp_path / "ck")
    args = dict(e["train_args"])
    run = {k: args.pop(k) for k in ("checkpoint_every", "progress")}
    recipe = TrainConfig(**args)
    done: list[int] = []
    lens = glt.train_tuned_lens(model, e["texts"], recipe, checkpoint_dir=tmp_path / "ck",
                                callback=lambda s, t, lens: done.append(s), **run)
    assert done == e["resumed_steps"]
    ref = glt.load_lens(F / "tuned_lens", model)
    torch.testing.assert_close(lens.weight.detach(), ref.weight.detach(), rtol=0, atol=1e-5)
