"""glt: how language models use their depth.

Capture the residual stream of a TransformerLens model, decode every layer with the logit or
tuned lens, reduce the decoded distributions in one streamed pass, and run the Guess-then-Refine
studies of Gupta et al. (arXiv 2510.18871) on any model.

The pipeline, module by module: model loading (`load_model`) -> residual capture
(`capture_residuals`) -> lenses (`Lens`: `LogitLens`, `TunedLens`; trained by `train_tuned_lens`
from a `TrainConfig`; `JacobianLens`, fitted by `fit_jacobian_lens`) -> streamed read-out (`readout`) ->
studies (`run_guess_then_refine`, `run_pos_study`, `run_fact_recall`, `run_multiple_choice`,
`early_exit`, `patch_layers`) -> onsets and aggregation -> plots (`plot_*`) -> `glt study` ->
`compare_runs` (`glt compare`: runs of several models or lenses on one normalised depth axis).
"""

from glt._version import __version__ as __version__
from glt.compare import Comparison, compare_runs, write_comparison_report
from glt.core import (
    GltError,
    ResidualSite,
    ResidualStack,
    cache_dir,
    capture_residuals,
    iter_residuals,
    load_model,
    tokenize,
)
from glt.data import TokenFrequency, load_frequency, wikipedia_paragraphs
from glt.decoding import (
    K_GRID,
    OnsetCurve,
    Onsets,
    Readout,
    aggregate_onsets,
    compute_onsets,
    first_crossing,
    readout,
    sharded_readout,
    stable_onset,
    topk_churn,
)
from glt.lenses import (
    JacobianLens,
    Lens,
    LogitLens,
    TunedLens,
    Unembed,
    export_jacobian_lens,
    export_tuned_lens,
    import_jacobian_lens,
    import_tuned_lens,
    load_lens,
)
from glt.lenses.fit import (
    LensEvaluation,
    TrainConfig,
    evaluate_lens,
    fit_jacobian_lens,
    fit_least_squares,
    least_squares_lens,
    train_tuned_lens,
)
from glt.pipeline import run_study
from glt.plotting import (
    Explorer,
    explore,
    plot_onset_curves,
    plot_rank_curves,
    plot_side_by_side,
    plot_token_heatmap,
)
from glt.studies.early_exit import EarlyExitResult, early_exit, plot_early_exit
from glt.studies.fact_recall import (
    Fact,
    FactRecallResult,
    load_facts,
    plot_fact_onsets,
    plot_fact_ranks,
    read_counterfact,
    read_mquake,
    run_fact_recall,
)
from glt.studies.guess_then_refine import (
    GuessRefineResult,
    SublayerSplit,
    plot_bucket_share,
    plot_flip_rate,
    plot_flip_split,
    plot_rank_by_bucket,
    plot_sublayer_split,
    run_guess_then_refine,
    sublayer_split,
)
from glt.studies.multiple_choice import (
    MCExample,
    MCPrompt,
    MultipleChoiceResult,
    format_mc_prompt,
    load_mc_dataset,
    plot_mc_decision,
    plot_mc_format,
    plot_multiple_choice,
    run_multiple_choice,
)
from glt.studies.part_of_speech import PosResult, plot_pos_onsets, plot_pos_ranks, run_pos_study
from glt.studies.patching import PatchingResult, patch_layers, plot_patching

__all__ = [
    "Comparison",
    "EarlyExitResult",
    "Explorer",
    "Fact",
    "FactRecallResult",
    "GltError",
    "GuessRefineResult",
    "K_GRID",
    "Lens",
    "JacobianLens",
    "LensEvaluation",
    "LogitLens",
    "MCExample",
    "MCPrompt",
    "MultipleChoiceResult",
    "OnsetCurve",
    "Onsets",
    "PatchingResult",
    "PosResult",
    "Readout",
    "ResidualSite",
    "ResidualStack",
    "SublayerSplit",
    "TokenFrequency",
    "TrainConfig",
    "TunedLens",
    "Unembed",
    "aggregate_onsets",
    "cache_dir",
    "capture_residuals",
    "compare_runs",
    "compute_onsets",
    "early_exit",
    "evaluate_lens",
    "explore",
    "export_jacobian_lens",
    "export_tuned_lens",
    "first_crossing",
    "fit_jacobian_lens",
    "fit_least_squares",
    "format_mc_prompt",
    "import_jacobian_lens",
    "import_tuned_lens",
    "iter_residuals",
    "load_facts",
    "load_frequency",
    "least_squares_lens",
    "load_lens",
    "load_mc_dataset",
    "load_model",
    "patch_layers",
    "plot_bucket_share",
    "plot_early_exit",
    "plot_fact_onsets",
    "plot_fact_ranks",
    "plot_flip_rate",
    "plot_flip_split",
    "plot_mc_decision",
    "plot_mc_format",
    "plot_multiple_choice",
    "plot_onset_curves",
    "plot_patching",
    "plot_pos_onsets",
    "plot_pos_ranks",
    "plot_rank_by_bucket",
    "plot_rank_curves",
    "plot_side_by_side",
    "plot_sublayer_split",
    "plot_token_heatmap",
    "read_counterfact",
    "read_mquake",
    "readout",
    "run_fact_recall",
    "run_guess_then_refine",
    "run_multiple_choice",
    "run_pos_study",
    "run_study",
    "sharded_readout",
    "stable_onset",
    "sublayer_split",
    "tokenize",
    "topk_churn",
    "train_tuned_lens",
    "wikipedia_paragraphs",
    "write_comparison_report",
]

