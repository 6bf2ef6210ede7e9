"""Pieces shared by policies: normalisation from dataset stats and vision encoders."""
