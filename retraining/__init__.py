"""Retraining: build a new face model from the student folders and publish it for the backend.

Training-only code. It builds on the serving package ``backend.recognizer`` (the same
decode → detect → crop → embed functions, the model bundle, the manifest) and is never
imported by it. ``retraining.pipeline.run`` is the one pass that ``retrain_model.py`` calls.
"""
