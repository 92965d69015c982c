"""Scoring, torch-free: raw output -> parse/validate (parsing) -> typed Prediction and Record
(records) -> metrics with intervals (metrics, calibration) -> a run folder (scoring, report,
html, charts), and `mcqa view` to open it (view). Nothing here imports torch, transformers or
peft, so scoring a predictions file from anywhere stays light."""
