"""The data audit: what the stored codes say about the dataset itself (near-duplicates and
leakage, likely label errors, outliers), and the calibration behind its thresholds."""
