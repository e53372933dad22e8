"""glt: how language models use their depth.

Capture the residual stream of a TransformerLens model, decode every layer with the logit or
tuned lens, reduce the decoded distributions in one streamed pass, and run the Guess-then-Refine
studies of Gupta et al. (arXiv 2510.18871) on any model.

The pipeline, module by module: model loading (`load_model`) -> residual capture
(`capture_residuals`) -> lenses (`LogitLens`, `TunedLens`) -> streamed read-out (`readout`) ->
studies (`run_guess_then_refine`, `run_pos_study`, `run_fact_recall`, `run_multiple_choice`,
`early_exit`, `patch_layers`) -> onsets and aggregation -> plots (`plot_*`) -> `glt study`.
"""

from glt._capture import ResidualStack, capture_residuals, iter_residuals, tokenize
from glt._corpus import wikipedia_paragraphs
from glt._distributed import sharded_readout
from glt._early_exit import EarlyExitResult, early_exit
from glt._errors import GltError
from glt._fact_data import Fact, load_facts
from glt._fact_files import read_counterfact, read_mquake
from glt._fact_result import FactRecallResult
from glt._facts import run_fact_recall
from glt._frequency import TokenFrequency, load_frequency
from glt._gtr_result import GuessRefineResult
from glt._guess_refine import run_guess_then_refine
from glt._lens import LogitLens, Unembed
from glt._lens_eval import LensEvaluation, evaluate_lens
from glt._lens_lstsq import fit_least_squares
from glt._mc_data import MCExample, load_mc_dataset
from glt._mc_prompts import MCPrompt, format_mc_prompt
from glt._mc_result import MultipleChoiceResult
from glt._models import cache_dir, load_model
from glt._multiple_choice import run_multiple_choice
from glt._onsets import (
    K_GRID,
    OnsetCurve,
    Onsets,
    aggregate_onsets,
    compute_onsets,
    first_crossing,
    stable_onset,
    topk_churn,
)
from glt._patching import patch_layers
from glt._patching_result import PatchingResult
from glt._plots import plot_onset_curves, plot_rank_curves, plot_side_by_side, plot_token_heatmap
from glt._plots_gtr import (
    plot_bucket_share,
    plot_fact_onsets,
    plot_fact_ranks,
    plot_flip_rate,
    plot_flip_split,
    plot_pos_onsets,
    plot_pos_ranks,
    plot_rank_by_bucket,
)
from glt._plots_studies import (
    plot_early_exit,
    plot_mc_decision,
    plot_mc_format,
    plot_multiple_choice,
    plot_patching,
)
from glt._pos import PosResult, run_pos_study
from glt._readout import Readout, readout
from glt._study import run_study
from glt._train import train_tuned_lens
from glt._tuned_lens import TunedLens, export_tuned_lens, import_tuned_lens, load_lens

__version__ = "0.1.0"

__all__ = [
    "EarlyExitResult",
    "Fact",
    "FactRecallResult",
    "GltError",
    "GuessRefineResult",
    "K_GRID",
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
    "ResidualStack",
    "TokenFrequency",
    "TunedLens",
    "Unembed",
    "aggregate_onsets",
    "cache_dir",
    "capture_residuals",
    "compute_onsets",
    "early_exit",
    "evaluate_lens",
    "export_tuned_lens",
    "first_crossing",
    "fit_least_squares",
    "format_mc_prompt",
    "import_tuned_lens",
    "iter_residuals",
    "load_facts",
    "load_frequency",
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
    "tokenize",
    "topk_churn",
    "train_tuned_lens",
    "wikipedia_paragraphs",
]


def _check_public_functions() -> None:
    """Wrap every public function so a wrongly typed argument raises GltError (see glt._check)."""
    import inspect

    from glt._check import checked

    namespace = globals()
    for name in __all__:
        if inspect.isfunction(namespace[name]):
            namespace[name] = checked(namespace[name])


_check_public_functions()
