"""Outcome tables -> quality/cost curves, APGR, CPT, cascade replay and threshold calibration."""
