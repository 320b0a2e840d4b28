"""The benchmark scripts (bench/RESULTS.md records what they measured). Run each from the repository root
as a module: ``python -m bench.study``, ``python -m bench.teacher_throughput``, ..."""
