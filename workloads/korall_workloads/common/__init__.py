"""Pieces both workload services share: one JSON error shape and one logging setup."""
