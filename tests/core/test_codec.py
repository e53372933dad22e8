"""One codec for every saved result (glt.core._codec): tags, versions, the non-finite rule, fields.

Table-driven over every result class: each sample is a file glt 0.1.0 wrote
(``tests/fixtures/v0_1_0``) with NaN, +inf and -inf put into its float fields; it must come back
equal (NaN where NaN was), and every damaged, foreign or newer file must raise one GltError that
names the file.
"""

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file

import glt
from glt.core._codec import Format, Saved, encode, read_tagged, write_tagged
from glt.pipeline._specs import TextReadout

F = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1_0"

JSON_RESULTS = [  # (class, 0.1.0 file)
    (glt.GuessRefineResult, "guess_refine.json"),
    (glt.PosResult, "pos.json"),
    (glt.FactRecallResult, "fact_recall.json"),
    (glt.MultipleChoiceResult, "multiple_choice.json"),
    (glt.EarlyExitResult, "early_exit.json"),
    (glt.PatchingResult, "patching.json"),
    (glt.LensEvaluation, "lens_eval.json"),
    (TextReadout, "study/data/heatmap_logit.json"),
]
ALL_RESULTS = [*JSON_RESULTS, (glt.Readout, "readout.safetensors")]
IDS = [cls.__name__ for cls, _ in ALL_RESULTS]
JSON_IDS = IDS[:-1]
LEGACY = {  # what glt 0.1.0 wrote, per class: every one must stay listed and keep loading
    glt.GuessRefineResult: (("format", "glt.GuessRefineResult/1"),),
    glt.PosResult: (("format", "glt.PosResult/1"),),
    glt.FactRecallResult: (("format", "glt.FactRecallResult/1"),),
    glt.MultipleChoiceResult: (("kind", "glt.MultipleChoiceResult"),),
    glt.LensEvaluation: (("kind", "glt.LensEvaluation"),),
    glt.Readout: (("format", "glt.Readout/1"),),
    glt.TokenFrequency: (("format", "glt.TokenFrequency/1"),),
}
SPECIALS = (math.nan, math.inf, -math.inf)


def same(a, b, where: str = "") -> None:
    """Deep equality: dataclass fields, tensors (dtype, shape, values; NaN == NaN), floats (NaN == NaN)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(torch.isnan(a), torch.isnan(b)) if a.is_floating_point() else True, where
        assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)) if a.is_floating_point() else torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


def poison(value, counter: list[int]):
    """``value`` with NaN, +inf and -inf written into the first entries of every float field."""
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
        out = value.clone().reshape(-1)
        for i, x in enumerate(SPECIALS[: out.numel()]):
            out[i] = x
            counter[0] += 1
        return out.reshape(value.shape)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: poison(getattr(value, f.name), counter)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        if value and all(isinstance(x, float) for x in value):
            counter[0] += min(len(value), 3)
            return SPECIALS[: len(value)] + value[3:]
        return tuple(poison(x, counter) for x in value)
    return value


@pytest.fixture(scope="module", params=ALL_RESULTS, ids=IDS)
def sample(request):
    """``(class, a 0.1.0 result with NaN / ±inf in its float fields, file suffix)``."""
    cls, name = request.param
    counter = [0]
    obj = poison(cls.load(F / name), counter)
    assert counter[0] >= 3, f"{cls.__name__}: no float field was poisoned"
    return cls, obj, Path(name).suffix


def at(text) -> str:
    """``text`` (a path, a tag) as a regular expression matching it literally."""
    return re.escape(str(text))


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ round trips
def test_round_trip_keeps_nan_and_inf(sample, tmp_path):
    cls, obj, suffix = sample
    path = obj.save(tmp_path / f"r{suffix}")
    assert isinstance(path, Path) and path == tmp_path / f"r{suffix}"
    back = cls.load(path)
    same(obj, back, cls.__name__)
    same(back, cls.load(back.save(tmp_path / f"again{suffix}")), cls.__name__)
    if suffix == ".json":  # strict JSON, non-finite floats by the documented rule
        text = path.read_text(encoding="utf-8")
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
        assert '"inf"' in text and '"-inf"' in text and "null" in text
        assert json.loads(text)["format"] == cls._format.tag and json.loads(text)["version"] == 1


def test_every_result_class_declares_one_format():
    classes = [cls for cls, _ in ALL_RESULTS]
    assert all(issubclass(cls, Saved) and isinstance(cls._format, Format) for cls in classes)
    tags = [cls._format.tag for cls in classes]
    assert tags == [f"glt.{cls.__name__}" for cls in classes]
    for cls, legacy in LEGACY.items():
        fmt = cls._format if issubclass(cls, Saved) else glt.data._frequency._FORMAT
        assert set(legacy) <= set(fmt.legacy), cls.__name__


# ------------------------------------------------------------------------------ JSON files that must fail
def _json(sample):
    cls, obj, suffix = sample
    if suffix != ".json":
        pytest.skip("safetensors: see the Readout tests below")
    return cls, obj, obj.to_json()


def test_wrong_tag_names_the_file_and_the_expected_tag(sample, tmp_path):
    cls, _, data = _json(sample)
    for other in ({**data, "format": "glt.Other"}, {k: v for k, v in data.items() if k != "format"}, [data]):
        path = _write_json(tmp_path / "other.json", other)
        with pytest.raises(glt.GltError, match=rf"{at(path)} is not a glt .*(expected format "
                                               rf"'{at(cls._format.tag)}'|JSON list)") as info:
            cls.load(path)
        assert "save()" in str(info.value)


def test_newer_version_asks_to_upgrade_glt(sample, tmp_path):
    cls, _, data = _json(sample)
    path = _write_json(tmp_path / "newer.json", {**data, "version": cls._format.version + 1})
    with pytest.raises(glt.GltError, match=rf"{at(path)} is {at(cls._format.tag)} version 2, newer .*upgrade glt"):
        cls.load(path)


@pytest.mark.parametrize("version", [None, 0, -1, "1", 1.0, True, [1]])
def test_damaged_version_is_malformed(sample, tmp_path, version):
    cls, _, data = _json(sample)
    path = _write_json(tmp_path / "v.json", {**data, "version": version})
    with pytest.raises(glt.GltError, match=rf"{at(path)} is malformed \(version"):
        cls.load(path)


def test_truncated_file_names_the_file(sample, tmp_path):
    cls, obj, _ = _json(sample)
    text = obj.save(tmp_path / "full.json").read_text(encoding="utf-8")
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(glt.GltError, match=rf"{at(path)} is corrupted or truncated.*delete it"):
        cls.load(path)


def test_missing_field_names_the_file_and_the_field(sample, tmp_path):
    cls, _, data = _json(sample)
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in (required[0], required[-1]):
        path = _write_json(tmp_path / "missing.json", {k: v for k, v in data.items() if k != name})
        with pytest.raises(glt.GltError, match=rf"{at(path)} is malformed .*field '{name}' is missing"):
            cls.load(path)


def test_arrays_whose_shapes_disagree_are_malformed(sample, tmp_path):
    cls, _, data = _json(sample)
    if cls is TextReadout:
        data = {**data, "readout": {**data["readout"], "ranks": data["readout"]["ranks"][1:]}}
        name = "ranks"
    else:
        name = next(n for n, v in data.items() if isinstance(v, list) and len(v) > 1
                    and all(isinstance(x, list) and x for x in v) and n not in ("items", "skipped", "symbols",
                                                                              "answer_tokens", "top1_tokens"))
        data = {**data, name: data[name][1:]}
    path = _write_json(tmp_path / "shape.json", data)
    with pytest.raises(glt.GltError, match=rf"{at(path)} is malformed .*{name} has shape"):
        cls.load(path)


def test_wrong_types_are_malformed(sample, tmp_path):
    cls, _, data = _json(sample)
    name = next(f.name for f in dataclasses.fields(cls) if f.type in (str, tuple[str, ...]))
    path = _write_json(tmp_path / "types.json", {**data, name: 3})
    with pytest.raises(glt.GltError, match=rf"{at(path)} is malformed .*{name} is int"):
        cls.load(path)


def test_legacy_tags_load(sample, tmp_path):
    cls, obj, data = _json(sample)
    if not cls._format.legacy:
        pytest.skip("glt 0.1.0 already wrote this class's current tag (its fixture loads in test_legacy_files)")
    body = {k: v for k, v in data.items() if k not in ("format", "version")}
    for key, value in cls._format.legacy:
        same(obj, cls.load(_write_json(tmp_path / "legacy.json", {key: value, **body})), cls.__name__)


def test_from_json_is_the_inverse_of_to_json(sample):
    cls, obj, data = _json(sample)
    same(obj, cls.from_json(json.loads(json.dumps(data))), cls.__name__)
    with pytest.raises(glt.GltError, match="some.json is malformed"):
        cls.from_json({**data, "version": "x"}, source="some.json")


# ------------------------------------------------------------------------------ safetensors and folders
def test_readout_metadata_tag_version_and_legacy(tmp_path):
    r = glt.Readout.load(F / "readout.safetensors")
    path = r.save(tmp_path / "r.safetensors")
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert (meta["format"], meta["version"]) == ("glt.Readout", "1")
    for change, match in [({"version": "2"}, "version 2, newer .*upgrade glt"),
                          ({"version": "one"}, "is malformed \\(version 'one'"),
                          ({"format": "glt.Other"}, "is not a glt read-out .*expected format 'glt.Readout'")]:
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={**meta, **change})
        with pytest.raises(glt.GltError, match=match):
            glt.Readout.load(tmp_path / "bad.safetensors")
    legacy = {k: v for k, v in meta.items() if k != "version"} | {"format": "glt.Readout/1"}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=legacy)
    same(r, glt.Readout.load(tmp_path / "old.safetensors"))
    save_file({k: v for k, v in tensors.items() if k != "kl_to_final"}, str(tmp_path / "bad.safetensors"),
              metadata=meta)
    with pytest.raises(glt.GltError, match="bad.safetensors is malformed .*field 'kl_to_final' is missing"):
        glt.Readout.load(tmp_path / "bad.safetensors")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(glt.GltError, match="r.safetensors is corrupted or truncated"):
        glt.Readout.load(path)


def test_token_frequency_folder_tag_version_and_legacy(tmp_path):
    freq = glt.TokenFrequency.load(F / "frequency")  # the 0.1.0 tag
    folder = freq.save(tmp_path / "freq")
    meta = json.loads((folder / "frequency.json").read_text())
    assert (meta["format"], meta["version"]) == ("glt.TokenFrequency", 1)
    same(freq.counts, glt.TokenFrequency.load(folder).counts)
    for change, match in [({"version": 2}, "newer .*upgrade glt"), ({"format": "glt.Other"}, "not a glt frequency")]:
        _write_json(folder / "frequency.json", {**meta, **change})
        with pytest.raises(glt.GltError, match=match) as info:
            glt.TokenFrequency.load(folder)
        assert "frequency.json" in str(info.value)
    _write_json(folder / "frequency.json", {k: v for k, v in meta.items() if k != "d_vocab"})
    with pytest.raises(glt.GltError, match="freq is malformed.*d_vocab"):
        glt.TokenFrequency.load(folder)


def test_study_manifest_uses_the_same_tag(tmp_path):
    from glt.pipeline import _run

    fmt = _run._MANIFEST_FORMAT
    old = json.loads((F / "study" / "study.json").read_text())  # a 0.1.0 manifest
    assert read_tagged(F / "study" / "study.json", fmt)["config"] == old["config"]
    path = write_tagged(tmp_path / "study.json", fmt, {"config": {"x": 1}})
    assert json.loads(path.read_text()) == {"format": "glt.study", "version": 1, "config": {"x": 1}}
    _write_json(path, {"format": "glt.study", "version": 9, "config": {}})
    with pytest.raises(glt.GltError, match="study.json is glt.study version 9, newer .*upgrade glt"):
        _run._check_out(tmp_path, _run.StudyConfig(), resume=True, force=False)
    _write_json(path, {"config": {}})
    with pytest.raises(glt.GltError, match="study.json is not a glt study manifest \\(no format tag"):
        _run._check_out(tmp_path, _run.StudyConfig(), resume=True, force=False)
    _run._check_out(tmp_path, _run.StudyConfig(), resume=False, force=True)  # --force ignores what is there


# ------------------------------------------------------------------------------ the rules, on a small class
@dataclasses.dataclass(frozen=True)
class Demo(Saved):
    _format: ClassVar[Format] = Format("glt.Demo", "demo result", legacy=(("kind", "demo"),),
                                       sizes={"layer": "labels"})
    labels: tuple[str, ...]
    x: Float[torch.Tensor, "layer row"]
    ids: Int[torch.Tensor, "row k"]
    ok: Bool[torch.Tensor, " row"]
    taus: tuple[float, ...] = ()
    names: dict[int, str] = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)


def test_the_non_finite_rule():
    values = (0.5, math.nan, math.inf, -math.inf, -0.0, 1e-310)
    assert encode(values) == [0.5, None, "inf", "-inf", -0.0, 1e-310]
    assert encode(torch.tensor(values[:4])) == [0.5, None, "inf", "-inf"]
    d = Demo(("a", "b"), torch.tensor([[math.inf], [math.nan]]), torch.tensor([[1, 2]]), torch.tensor([True]),
             taus=values, names={3: "x"}, extra={"p": math.nan})
    data = json.loads(json.dumps(d.to_json()))
    assert data["x"] == [["inf"], [None]] and data["names"] == {"3": "x"}
    back = Demo.from_json(data)
    same(d.x, back.x)
    same(back.taus, values)
    assert back.names == {3: "x"} and back.extra == {"p": None}  # untyped dicts load as JSON holds them
    with pytest.raises(glt.GltError, match=r"taus\[1\] holds 'nan', expected a number, null"):
        Demo.from_json({**data, "taus": [1.0, "nan"]})


@pytest.mark.parametrize("change, match", [
    ({"ids": [[1.5, 2.0]]}, "ids is torch.float32, expected int64"),
    ({"ids": [[True, False]]}, "ids is torch.bool, expected int64"),
    ({"ok": [1]}, "ok is torch.int64, expected bool"),
    ({"x": [[1.0], [2.0], [3.0]]},
     r"x has shape \(3, 1\), expected \(2, 1\) \[layer row\] \(layer = 2 from len\(labels\)\)"),
    ({"ids": [[1, 2], [3, 4]]}, r"ids has shape \(2, 2\), expected \(1, 2\) \[row k\] \(row = 1 from x\)"),
    ({"x": [1.0, 2.0]}, r"x has shape \(2,\), expected 2 dims"),
    ({"x": [[1.0], [2.0, 3.0]]}, "malformed"),
    ({"labels": ["a", 2]}, r"labels\[1\] is int"),
    ({"names": {"a": "x"}}, "invalid literal for int"),
    ({"names": {"1": 2}}, r"names\['1'\] is int"),
    ({"format": None}, r"demo.json is not a glt demo result \(format None, expected format 'glt.Demo'\)"),
])
def test_bad_fields_raise_one_glt_error(change, match):
    d = Demo(("a", "b"), torch.zeros(2, 1), torch.tensor([[1, 2]]), torch.tensor([True]))
    with pytest.raises(glt.GltError, match=match):
        Demo.from_json({**d.to_json(), **change}, source="demo.json")


def test_empty_tensors_keep_their_declared_shape():
    d = Demo(("a", "b", "c"), torch.zeros(3, 0), torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.bool))
    data = json.loads(json.dumps(d.to_json()))
    assert data["ids"] == []  # JSON cannot keep the trailing size of an empty array: k is unknown
    back = Demo.from_json(data)
    assert (back.x.shape, back.ids.shape, back.ok.shape) == ((3, 0), (0, 0), (0,)) and back.ok.dtype == torch.bool
    d = Demo(("a",), torch.zeros(1, 2), torch.zeros(2, 0, dtype=torch.long), torch.ones(2, dtype=torch.bool))
    same(d, Demo.from_json(json.loads(json.dumps(d.to_json()))))


def test_legacy_tag_and_default_fields_on_the_small_class():
    d = Demo(("a",), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.bool))
    data = {k: v for k, v in d.to_json().items() if k not in ("format", "version", "taus", "names", "extra")}
    same(d, Demo.from_json({"kind": "demo", **data}))
    with pytest.raises(glt.GltError, match="demo.json is glt.Demo version 3, newer"):
        Demo.from_json({"kind": "demo", "version": 3, **data}, source="demo.json")


def test_a_saved_class_must_declare_its_format():
    with pytest.raises(TypeError, match="must declare _format"):
        type("NoFormat", (Saved,), {})
