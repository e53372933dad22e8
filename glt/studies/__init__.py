"""The studies of the paper, one subpackage each: run, result, data and plots.

`guess_then_refine`, `part_of_speech`, `fact_recall`, `multiple_choice`, `early_exit` and
`patching`. A study imports the layers below it (core, data, lenses, decoding, plotting), never
another study.
"""
