"""The collector: enrollment, ingest, storage, analysis, exports."""
