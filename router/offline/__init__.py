"""Outcome tables -> training, calibration, evaluation (quality/cost curves, APGR, CPT, cascade replay).

Imports the runtime (it trains and judges what the runtime runs); the runtime never imports it.
`tables` is the one module here that reads files.
"""
