"""`star eval`: the benchmark loop (runner), what each item contributes (scoring), the resumable run folder
(runlog) and the report (report)."""
