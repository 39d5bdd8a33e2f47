"""navil.eval: VLMEvalKit-style benchmarks, their official metrics, the generation runner and reports.

`navil.eval.score(name, data_tsv_path, predictions)` scores predictions without a model.
"""
from navil.eval.scoring import BENCHMARKS, get_benchmark, navil_average, register_benchmark, score

__all__ = ["BENCHMARKS", "get_benchmark", "navil_average", "register_benchmark", "score"]
